//! Exit codes, the same for every subcommand, so scripts can tell a run
//! with failures from one that measured nothing.

/// Every attempt succeeded.
pub const EXIT_OK: u8 = 0;
/// The run finished but some attempts failed (the report says which and why).
pub const EXIT_FAILURES: u8 = 1;
/// Nothing was measured: bad input or an unusable target (clap also uses 2).
pub const EXIT_SETUP: u8 = 2;
/// Stopped by Ctrl-C; what was measured so far is reported.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The exit code of a finished run.
pub fn exit_code(interrupted: bool, failures: u64) -> u8 {
    if interrupted {
        EXIT_INTERRUPTED
    } else if failures > 0 {
        EXIT_FAILURES
    } else {
        EXIT_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interruption_outranks_failures() {
        assert_eq!(exit_code(false, 0), EXIT_OK);
        assert_eq!(exit_code(false, 3), EXIT_FAILURES);
        assert_eq!(exit_code(true, 3), EXIT_INTERRUPTED);
        assert_eq!(exit_code(true, 0), EXIT_INTERRUPTED);
    }
}
