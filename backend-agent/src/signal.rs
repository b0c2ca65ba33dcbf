//! Signal names as SSH spells them ("INT", "TERM", without "SIG") and their numbers.

/// The signals RFC 4254 names, plus the user signals.
const SIGNALS: &[(&str, libc::c_int)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("ABRT", libc::SIGABRT),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("SEGV", libc::SIGSEGV),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
];

/// The number of a signal name; accepts an optional "SIG" prefix.
pub fn number(name: &str) -> Option<libc::c_int> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The SSH name of a signal number.
pub fn name(number: libc::c_int) -> Option<&'static str> {
    SIGNALS.iter().find(|(_, s)| *s == number).map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        assert_eq!(super::number("INT"), Some(libc::SIGINT));
        assert_eq!(super::number("SIGKILL"), Some(libc::SIGKILL));
        assert_eq!(super::number("WINCH"), None);
        assert_eq!(super::name(libc::SIGTERM), Some("TERM"));
    }
}
