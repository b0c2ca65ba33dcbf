//! `ls -l` style long names for directory listings, as OpenSSH's sftp-server sends
//! them (the client prints them verbatim for `ls -l`).

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Listings show a time of day for files changed within about six months, else a year.
const RECENT_SECS: i64 = 182 * 24 * 3600;

/// User and group names from the container's /etc/passwd and /etc/group, read once.
#[derive(Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    /// The container's names; empty tables when the files are missing (distroless).
    pub fn load() -> Names {
        Names {
            users: id_table("/etc/passwd"),
            groups: id_table("/etc/group"),
        }
    }

    /// The home directory of `user` in /etc/passwd.
    pub fn home_of(user: &str) -> Option<String> {
        let text = std::fs::read_to_string("/etc/passwd").ok()?;
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 6 && fields[0] == user).then(|| fields[5].to_owned())
        })
    }

    /// One `ls -l` line: mode, links, owner, group, size, time, name.
    pub fn long_name(&self, name: &str, meta: &Metadata, now: i64) -> String {
        let user = name_or_id(&self.users, meta.uid());
        let group = name_or_id(&self.groups, meta.gid());
        format!(
            "{} {:>3} {:<8} {:<8} {:>8} {} {}",
            mode_string(meta.mode()),
            meta.nlink(),
            user,
            group,
            meta.size(),
            ls_time(meta.mtime(), now),
            name
        )
    }
}

/// Seconds since the epoch, for [`Names::long_name`].
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn name_or_id(table: &HashMap<u32, String>, id: u32) -> String {
    table.get(&id).cloned().unwrap_or_else(|| id.to_string())
}

/// `name:x:id:...` lines to id → name; the first name of an id wins.
fn id_table(path: &str) -> HashMap<u32, String> {
    let mut table = HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return table;
    };
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(id) = id.parse() {
            table.entry(id).or_insert_with(|| name.to_owned());
        }
    }
    table
}

/// `drwxr-sr-t` and friends.
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let bit = |mask: u32, c: char| if mode & mask != 0 { c } else { '-' };
    // Execute bit combined with setuid/setgid/sticky: lower case when both are set.
    let special = |exec: u32, special: u32, set: char| match (mode & exec != 0, mode & special != 0)
    {
        (true, true) => set,
        (false, true) => set.to_ascii_uppercase(),
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't'),
    ]
    .iter()
    .collect()
}

/// `Mar  5 14:07` for recent times, `Mar  5  2023` for others (UTC).
fn ls_time(time: i64, now: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day) = civil_date(time.div_euclid(86_400));
    let month = MONTHS[(month - 1) as usize];
    if (now - time).abs() < RECENT_SECS {
        let secs = time.rem_euclid(86_400);
        format!(
            "{month} {day:>2} {:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60
        )
    } else {
        format!("{month} {day:>2}  {year}")
    }
}

/// Year, month (1–12) and day (1–31) of a day number counted from 1970-01-01, in the
/// proleptic Gregorian calendar. Works in 400-year eras of 146097 days starting on
/// March 1st, so the leap day falls at the end of each era-year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(20_454), (2026, 1, 1));
    }

    #[test]
    fn times_show_the_hour_when_recent() {
        let t = 1_709_647_620; // 2024-03-05 14:07 UTC
        assert_eq!(ls_time(t, t + 3600), "Mar  5 14:07");
        assert_eq!(ls_time(t, t + 400 * 86_400), "Mar  5  2024");
    }

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(mode_string(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(libc::S_IFREG | 0o6644), "-rwSr-Sr--");
        assert_eq!(mode_string(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
    }
}
