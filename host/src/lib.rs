//! keyport: owns a platform's connections to third-party accounts.
//!
//! The host does the OAuth mechanics, stores secrets encrypted, keeps tokens fresh and makes
//! authenticated calls on a connection's behalf. Everything that differs between providers lives
//! in connectors: WebAssembly components built against the WIT contract in `wit/`, run by
//! [`runtime`] and kept by [`registry`].

pub mod api;
pub mod auth;
pub mod cli;
pub mod connections;
pub mod events;
pub mod hotload;
pub mod model;
pub mod oauth;
pub mod providers;
pub mod proxy;
pub mod registry;
pub mod runtime;
pub mod seed;
pub mod store;
pub mod ui;
pub mod vault;
pub mod web;
pub mod webhooks;

/// The built-in connectors, compiled from `connectors/` by the build script.
pub mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_connectors.rs"));
}
