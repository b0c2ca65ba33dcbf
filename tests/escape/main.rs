//! The container-escape review (issue 20), one module per finding, each driven as a
//! student would: the stock `ssh` client against a real lab on real Docker.
//!
//! - `helper`: root environments, capabilities and the in-container helper's socket
//!   (findings 1 and 2);
//! - `lockout`: nobody can lock another student out (finding 3);
//! - `exhaustion`: one student cannot use up what the node shares (finding 4);
//! - `roles`: cluster certificates carry roles, and containers reach no cluster
//!   address (finding 5);
//! - `names`: user and environment names that ran together in container names;
//! - the other low findings (6) sit with the part they concern.

#[path = "../lab/mod.rs"]
mod lab;

mod exhaustion;
mod helper;
mod lockout;
mod names;
mod roles;
