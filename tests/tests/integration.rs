//! Tandem's cross-crate integration tests: one test binary, one module per concern, the modules
//! under `integration/` (so cargo does not build each as its own binary).

#[path = "integration/crash.rs"]
mod crash;

#[path = "integration/device_sync.rs"]
mod device_sync;

#[path = "integration/js_documents.rs"]
mod js_documents;

#[path = "integration/convergence.rs"]
mod convergence;

#[path = "integration/dependencies.rs"]
mod dependencies;

#[path = "integration/js_interop.rs"]
mod js_interop;
