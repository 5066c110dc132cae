//! Where outputs go, behind one interface: a local folder tree ([`local`]) or an object storage
//! bucket ([`s3`]), both a [`Store`] (as iceberg-rust's `FileIO` and delta-rs's `LogStore` put
//! one interface over their storages). A [`Location`] is a store and a key; [`url`] is the one
//! place a name becomes a location. On top of the store: files that appear whole
//! ([`file::AtomicFile`]), the one commit protocol ([`commit`]), one run at a time per output
//! ([`lock`]), and the sweep of what killed runs left ([`scratch`], and each store's recovery).
//! Nothing outside this folder asks which store it writes to.

pub mod api;
pub mod commit;
pub mod file;
mod hash;
pub mod iceberg;
pub mod local;
pub mod location;
pub mod lock;
mod s3;
pub mod scratch;
pub mod url;

pub use api::{Feature, Given, Kind, Staged, StagedDir, Store};
pub use file::{AtomicFile, Written};
pub use hash::hex;
pub use location::{Location, Target, DEFAULT_MODE};
pub use lock::{RunLock, Wait};
