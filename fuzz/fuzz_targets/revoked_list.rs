#![no_main]
//! See `labssh_fuzz_checks::revoked_list` for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| labssh_fuzz_checks::revoked_list(data));
