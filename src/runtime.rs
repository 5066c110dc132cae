//! The one async runtime of the process, for the clients that are async: object storage
//! (`object_store`), the replication connection (`pgwire-replication`) and NATS (`async-nats`).
//! Everything else is synchronous and calls in with `block_on`; the runtime starts on first use,
//! so an export to local files never starts it.

use std::sync::OnceLock;

/// The runtime, started on first use (two worker threads: the work is network waiting).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("export-events-io")
            .enable_all()
            .build()
            .expect("starting the async runtime")
    })
}
