//! See main.rs; this module's tests are added with its fix.
