//! Arguments and replies of extended requests (statvfs, hardlink, limits, ...).

use super::*;

pub(super) fn extended_reply<T: serde::Serialize>(id: u32, value: &T) -> Reply<Packet> {
    let data = russh_sftp::ser::to_bytes(value)
        .map_err(|e| StatusCode::Failure.with_message(e.to_string()))?;
    Ok(Packet::ExtendedReply(ExtendedReply {
        id,
        data: data.to_vec(),
    }))
}

/// The SSH strings an extended request carries.
pub(super) struct Args<'a>(pub(super) &'a [u8]);

impl Args<'_> {
    pub(super) fn string(&mut self) -> Reply<String> {
        let bad = || StatusReply::from(StatusCode::BadMessage);
        let (len, rest) = self.0.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(bad());
        }
        let (text, rest) = rest.split_at(len);
        self.0 = rest;
        String::from_utf8(text.to_vec()).map_err(|_| bad())
    }

    pub(super) fn path(&mut self) -> Reply<PathBuf> {
        Ok(path(&self.string()?))
    }
}
