//! The one async runtime of the process, for the clients that are async: object storage
//! (`object_store`), the replication connection (`pgwire-replication`) and NATS (`async-nats`).
//! Everything else is synchronous and calls in with `block_on`; the runtime starts on first use,
//! so an export to local files never starts it.
//!
//! Starting it also chooses the process's TLS provider. Our dependencies enable both of rustls'
//! providers (aws-lc-rs for object_store's client, ring for pgwire-replication's), and a client
//! that asks rustls for the process default (async-nats, for `tls://`) then panics: "Could not
//! automatically determine the process-level CryptoProvider". aws-lc-rs, rustls' own default,
//! is installed.

use std::sync::OnceLock;

/// The runtime, started on first use (two worker threads: the work is network waiting).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // Fails only when a provider is installed already, which is as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("export-events-io")
            .enable_all()
            .build()
            .expect("starting the async runtime")
    })
}
