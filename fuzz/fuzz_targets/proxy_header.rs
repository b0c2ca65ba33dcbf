#![no_main]
//! See `labssh_fuzz_checks::proxy_header` for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| labssh_fuzz_checks::proxy_header(data));
