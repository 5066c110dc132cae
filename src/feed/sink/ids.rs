//! The ids of the feed's messages, read back: `<scope>:<commit LSN>:<position>` (JetStream's
//! `Nats-Msg-Id`, Kafka's `export-events.id` header), where the last one on a subject or a
//! topic's partition says where this feed resumes, and whose feed the destination holds. A
//! destination is shared and its messages untrusted: an id that is not one of this feed's is
//! refused in one line, never guessed at.

use anyhow::Result;

use crate::error::UsageError;
use crate::feed::pgoutput::Lsn;

/// `scope:16/B374D848:12` → (scope, LSN, position); ids of earlier versions have no scope.
fn parse_id(id: &str) -> Option<(Option<&str>, Lsn, u64)> {
    let mut parts = id.rsplitn(3, ':');
    let position = parts.next()?.parse().ok()?;
    let lsn = parts.next()?.parse().ok()?;
    Some((parts.next(), lsn, position))
}

/// Where a destination names its place and how it is chosen: `subject iot.events` and
/// `--subject`, `topic iot.events` and `--topic`.
pub struct Place<'a> {
    pub name: &'a str,
    pub flag: &'a str,
}

/// Where this feed resumes at `place`, from the id of the last message there: after it when it
/// is this feed's (or an earlier version's, which had no scope); the place is refused when it
/// holds another feed's, or not a change at all.
pub fn resume_point(id: Option<&str>, scope: &str, place: &Place) -> Result<Option<(Lsn, u64)>> {
    let refuse = |whose: String| {
        UsageError(format!(
            "{} already holds {whose}, not this feed's ({scope}): give each database and slot \
             its own {}",
            place.name, place.flag
        ))
    };
    match id.map(|id| (id, parse_id(id))) {
        None => Err(refuse("messages without export-events ids".into()).into()),
        Some((_, Some((None, lsn, position)))) => Ok(Some((lsn, position))),
        Some((_, Some((Some(owner), lsn, position)))) if owner == scope => {
            Ok(Some((lsn, position)))
        }
        Some((_, Some((Some(owner), ..)))) => Err(refuse(format!("the changes of {owner}")).into()),
        Some((id, None)) => Err(refuse(format!("a message with id {id:?}")).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_feed() {
        assert_eq!(
            parse_id("16/B374D848:12"),
            Some((None, Lsn(0x16_B374_D848), 12))
        );
        assert_eq!(
            parse_id("771-5-nightly:16/B374D848:12"),
            Some((Some("771-5-nightly"), Lsn(0x16_B374_D848), 12))
        );
        assert_eq!(parse_id("x"), None);
    }

    #[test]
    fn a_subject_of_another_feed_is_refused() {
        let ours = "771-5-nightly";
        let place = Place {
            name: "subject s",
            flag: "--subject",
        };
        let at = |id| resume_point(Some(id), ours, &place);
        assert_eq!(at("771-5-nightly:0/10:3").unwrap(), Some((Lsn(0x10), 3)));
        assert_eq!(
            at("0/10:3").unwrap(),
            Some((Lsn(0x10), 3)),
            "an earlier version's"
        );
        let err = at("999-5-nightly:0/10:3").unwrap_err().to_string();
        assert!(err.contains("the changes of 999-5-nightly"), "{err}");
        assert!(at("hello").is_err());
        assert!(resume_point(None, ours, &place).is_err());
    }

    proptest::proptest! {
        #[test]
        fn ids_never_panic(id in "\\PC{0,40}") {
            let _ = parse_id(&id);
            let place = Place { name: "topic t", flag: "--topic" };
            let _ = resume_point(Some(&id), "a-1-s", &place);
        }
    }
}
