//! keyport: owns a platform's connections to third-party accounts.
//!
//! The host does the OAuth mechanics, stores secrets encrypted, keeps tokens fresh and makes
//! authenticated calls on a connection's behalf. Everything that differs between providers lives
//! in connectors: WebAssembly components built against the WIT contract in `wit/`, run by
//! [`runtime`] and kept by [`registry`].
//!
//! # Module map
//!
//! Each concept lives in one module; each module opens with what it owns and what it refuses.
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | edges | [`cli`], [`api`], [`ui`] | the command line; the JSON API; the pages |
//! | shared by the edges | [`web`], [`auth`] | handler state and errors; who is calling (admin token, API keys, sessions, CSRF) |
//! | built on the lifecycle | [`proxy`], [`webhooks`], [`hotload`], [`providers`] | proxied calls; webhook deliveries; connector uploads; custom OAuth imports |
//! | the lifecycle | [`connections`] | the `Service`: flows, tokens, accounts, refresh, scheduler, config, provider apps, API-key connections, changes, reads, usage |
//! | below the lifecycle | [`events`], [`oauth`], [`registry`] | audit and outbox rows; OAuth mechanics; loaded connectors |
//! | foundations | [`store`], [`vault`], [`runtime`], [`model`] | persistence (ciphertext only); encryption; the wasm sandbox; `Status` and times |
//!
//! # Which module may use which
//!
//! Arrows point from user to used; nothing points up.
//!
//! ```text
//! cli                      -> everything (it assembles the service)
//! api, ui                  -> web, auth, connections, proxy, webhooks, hotload, providers, catalogue, registry, runtime (manifests), mail
//! web                      -> auth, connections, mail
//! mail                     -> connections (roles)
//! auth                     -> connections, store (sessions, API keys, the admin token), oauth, runtime (capped reads), vault
//! proxy, webhooks,
//! hotload, providers       -> connections, events, registry, runtime, store
//! catalogue                -> connections, registry, store, builtin (the embedded files)
//! kit                      -> runtime (`keyport connector new | check | dev`)
//! connections              -> events, oauth, registry, runtime, store, vault, model
//! events                   -> store, model, vault (event ids)
//! oauth                    -> runtime
//! registry                 -> runtime, builtin, model
//! store                    -> model
//! runtime, vault, model    -> nothing of ours
//! fuzzing                  -> proxy, oauth, vault, webhooks, runtime, builtin (fuzz targets;
//!                             nothing uses it)
//! ```
//!
//! `api` and `ui` never import each other or [`store`]; [`connections`] imports nothing from
//! `api`, `ui`, `proxy`, `webhooks` or `hotload`. The checks in `host/tests/layers.rs` keep it so.

pub mod api;
pub mod auth;
pub mod catalogue;
pub mod cli;
pub mod connections;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod hotload;
pub mod kit;
pub mod mail;
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
