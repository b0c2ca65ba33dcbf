//! Logins decided by something other than the users file (issue 14): OpenSSH user
//! certificates from a trusted CA, the revoked keys list, and the webhook
//! authenticator. Each drives a real lab with the stock `ssh` client; the
//! certificates are made with the stock `ssh-keygen -s`, the KRLs with
//! `ssh-keygen -k`.
//!
//! - `certificates`: principals, validity, CA trust, and what critical options
//!   and extensions restrict;
//! - `revoked`: KRLs and plain key lists, reloaded while the proxy runs;
//! - `webhook`: an https service allowing, denying, overriding, timing out, and
//!   the credential cache and brute-force limits in front of it.

#[path = "../lab/mod.rs"]
mod lab;

mod ca;
mod certificates;
mod revoked;
mod webhook;
