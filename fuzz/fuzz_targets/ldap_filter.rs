#![no_main]
//! See `labssh_fuzz_checks::ldap_filter` for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| labssh_fuzz_checks::ldap_filter(data));
