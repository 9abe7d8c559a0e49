//! Hotness profiles: what kiln learned in one run, saved to a file and
//! read back in the next as hints (see `warm` for what the hints do).
//!
//! A function takes part when the host gives it a [`ProfileKey`]
//! ([`Bead::set_profile_key`], or `register_keyed` on the adapters): `id`
//! names the function across runs, `code_hash` covers its code, both chosen
//! by the host. The key lives in the domain's side table, off the bead,
//! with the OSR sites the function's loops were promoted at.
//!
//! The file is small and versioned: an 8-byte magic, a version, the
//! payload's length and CRC-32, then the entries in postcard (serde's
//! compact binary format). Reading checks all four before decoding, so an
//! empty, truncated, foreign or corrupt file is a typed [`ProfileError`]
//! and nothing else happens; a decoded profile is still only a hint: its
//! numbers order compiles and start blacklists that decay, nothing more.

use std::io;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::bead::Bead;

/// The host's name for a function across runs (see the module docs): a
/// profile entry counts for a function only when both halves match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProfileKey {
    /// Which function (a hash of its qualified name, say).
    pub id: u64,
    /// Which version of its code (a hash of its source or bytecode, say):
    /// a changed function's old profile counts for nothing.
    pub code_hash: u64,
}

/// What one function learned in the run that saved the profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileEntry {
    /// The function.
    pub key: ProfileKey,
    /// Calls counted.
    pub calls: u32,
    /// Weighted loop back-edges counted.
    pub backedges: u32,
    /// The highest tier its code reached, if it was compiled.
    pub tier_reached: Option<u8>,
    /// The loop sites it was promoted at (OSR), at most [`MAX_OSR_SITES`].
    pub osr_sites: Vec<u64>,
    /// Bailouts and failed compiles.
    pub bailouts: u16,
    /// Whether it ended the run blacklisted.
    pub blacklisted: bool,
}

impl ProfileEntry {
    /// The entry for a kiln-core bead's record, for a host that runs a
    /// kiln-core broker itself (kiln-host's frame pump) and keeps its own
    /// keys; no OSR sites (kiln-std notes those, kiln-core does not).
    pub fn from_record(key: ProfileKey, record: kiln_core::BeadProfile) -> Self {
        Self {
            key,
            calls: record.calls,
            backedges: record.backedges,
            tier_reached: record.tier_reached,
            osr_sites: Vec::new(),
            bailouts: record.bailouts,
            blacklisted: record.blacklisted,
        }
    }

    /// The number compiles are ordered by: calls plus back-edges.
    pub fn hotness(&self) -> u64 {
        u64::from(self.calls) + u64::from(self.backedges)
    }
}

/// OSR sites remembered per function (the first ones promoted).
pub const MAX_OSR_SITES: usize = 8;

/// A saved profile: one entry per keyed function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    entries: Vec<ProfileEntry>,
}

/// Why a profile file was refused. Nothing is applied when it is.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProfileError {
    /// The file has no bytes.
    Empty,
    /// The file ends early (a write cut short).
    Truncated,
    /// Not a kiln profile (the magic differs).
    Foreign,
    /// A kiln profile of a format version this build does not read.
    UnsupportedVersion(u16),
    /// A kiln profile whose bytes do not check out (checksum, length or
    /// decoding).
    Corrupt,
    /// Reading or writing the file failed.
    Io(io::Error),
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("the profile file is empty"),
            Self::Truncated => f.write_str("the profile file is truncated"),
            Self::Foreign => f.write_str("not a kiln profile file"),
            Self::UnsupportedVersion(version) => write!(f, "kiln profile format {version} is not supported"),
            Self::Corrupt => f.write_str("the profile file is corrupt"),
            Self::Io(error) => write!(f, "profile file: {error}"),
        }
    }
}

impl std::error::Error for ProfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(error) => Some(error),
            _ => None,
        }
    }
}

const MAGIC: &[u8; 8] = b"KILNPRF\0";
const VERSION: u16 = 1;
/// Magic, version, payload length, payload CRC-32.
const HEADER: usize = 8 + 2 + 4 + 4;

impl Profile {
    /// A profile of `entries` (a host that keeps its own beads builds one
    /// from kiln-core's `BeadProfile` records).
    pub fn from_entries(entries: Vec<ProfileEntry>) -> Self {
        Self { entries }
    }

    /// The entries, in the order they were saved.
    pub fn entries(&self) -> &[ProfileEntry] {
        &self.entries
    }

    /// The entry for `key`, if the profile has one with both halves equal.
    pub fn get(&self, key: ProfileKey) -> Option<&ProfileEntry> {
        self.entries.iter().find(|entry| entry.key == key)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Encoding plain structs into a Vec cannot fail.
        let payload = postcard::to_allocvec(&self.entries).unwrap_or_default();
        let mut bytes = Vec::with_capacity(HEADER + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes
    }

    /// Reads a profile from a file's bytes, checking magic, version,
    /// length and checksum before decoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProfileError> {
        if bytes.is_empty() {
            return Err(ProfileError::Empty);
        }
        let magic_seen = &bytes[..bytes.len().min(MAGIC.len())];
        if magic_seen != &MAGIC[..magic_seen.len()] {
            return Err(ProfileError::Foreign);
        }
        if bytes.len() < HEADER {
            return Err(ProfileError::Truncated);
        }
        let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(ProfileError::UnsupportedVersion(version));
        }
        let (length, crc) = (word(10) as usize, word(14));
        let payload = &bytes[HEADER..];
        if payload.len() < length {
            return Err(ProfileError::Truncated);
        }
        if payload.len() > length || crc32fast::hash(payload) != crc {
            return Err(ProfileError::Corrupt);
        }
        let entries: Vec<ProfileEntry> = postcard::from_bytes(payload).map_err(|_| ProfileError::Corrupt)?;
        Ok(Self { entries })
    }

    /// Writes the profile to `path` (through a temporary file renamed into
    /// place, so a crash leaves the old profile or the new one).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ProfileError> {
        let path = path.as_ref();
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        std::fs::write(&temporary, self.to_bytes()).map_err(ProfileError::Io)?;
        std::fs::rename(&temporary, path).map_err(ProfileError::Io)
    }

    /// Reads the profile at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ProfileError> {
        Self::from_bytes(&std::fs::read(path).map_err(ProfileError::Io)?)
    }
}

impl Bead {
    /// Gives the function its [`ProfileKey`], so profiles cover it (see
    /// [`Beadie::export_profile`](crate::Beadie::export_profile)). Kept in
    /// the domain's side table, off the bead.
    pub fn set_profile_key(&self, key: ProfileKey) {
        self.update_extras(|extras| extras.profile_key = Some(key));
    }

    /// The function's [`ProfileKey`], if it was given one (takes the side
    /// table's lock: not for call paths).
    pub fn profile_key(&self) -> Option<ProfileKey> {
        self.read_extras(|extras| extras.profile_key).flatten()
    }

    /// The bead's entry for a profile, if it has a key.
    pub(crate) fn profile_entry(&self) -> Option<ProfileEntry> {
        let (key, osr_sites) = self.read_extras(|extras| Some((extras.profile_key?, extras.osr_sites.clone())))??;
        let record = kiln_core::BeadProfile::of(&self.kiln_bead);
        Some(ProfileEntry { osr_sites, ..ProfileEntry::from_record(key, record) })
    }
}

impl<P: crate::HotnessPolicy> crate::Beadie<P> {
    /// What this `Beadie` learned so far about its keyed functions, hottest
    /// first. Walks the chain (one side-table lock per bead); any time.
    pub fn export_profile(&self) -> Profile {
        let mut entries = Vec::new();
        self.walk(|bead: &Arc<Bead>| entries.extend(bead.profile_entry()));
        entries.sort_by(|a, b| b.hotness().cmp(&a.hotness()).then(a.key.cmp(&b.key)));
        Profile { entries }
    }
}

/// Notes that the function whose kiln-core bead is at `address` was
/// promoted at loop `site`, if it is keyed (only keyed functions have a
/// side-table entry to hold it, and only they are profiled).
pub(crate) fn note_osr_site(extras: &crate::extras::ExtrasTable, address: usize, site: u64) {
    extras.read(address, |extras| {
        if extras.profile_key.is_some() && extras.osr_sites.len() < MAX_OSR_SITES && !extras.osr_sites.contains(&site) {
            extras.osr_sites.push(site);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Profile {
        let key = |id| ProfileKey { id, code_hash: id * 31 };
        Profile::from_entries(vec![
            ProfileEntry {
                key: key(1),
                calls: 5_000,
                backedges: 70,
                tier_reached: Some(1),
                osr_sites: vec![3, 9],
                bailouts: 0,
                blacklisted: false,
            },
            ProfileEntry {
                key: key(2),
                calls: 12,
                backedges: 0,
                tier_reached: None,
                osr_sites: vec![],
                bailouts: 4,
                blacklisted: true,
            },
        ])
    }

    #[test]
    fn a_profile_round_trips() {
        let profile = sample();
        assert_eq!(Profile::from_bytes(&profile.to_bytes()).unwrap(), profile);
        assert_eq!(Profile::from_bytes(&Profile::default().to_bytes()).unwrap(), Profile::default());
    }

    #[test]
    fn bad_files_are_refused_with_their_reason() {
        let bytes = sample().to_bytes();
        assert!(matches!(Profile::from_bytes(&[]), Err(ProfileError::Empty)));
        for cut in [3, 8, HEADER - 1, HEADER, bytes.len() - 1] {
            assert!(matches!(Profile::from_bytes(&bytes[..cut]), Err(ProfileError::Truncated)), "cut at {cut}");
        }
        assert!(matches!(Profile::from_bytes(b"{\"traceEvents\":[]}"), Err(ProfileError::Foreign)));
        assert!(matches!(Profile::from_bytes(b"\x7fELF"), Err(ProfileError::Foreign)));
        let mut newer = bytes.clone();
        newer[8] = 2;
        assert!(matches!(Profile::from_bytes(&newer), Err(ProfileError::UnsupportedVersion(2))));
        for at in [HEADER, bytes.len() - 1, 12, 15] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            assert!(
                matches!(Profile::from_bytes(&flipped), Err(ProfileError::Corrupt | ProfileError::Truncated)),
                "a flipped bit at {at}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(Profile::from_bytes(&longer), Err(ProfileError::Corrupt)));
    }

    #[test]
    fn a_well_checksummed_payload_that_does_not_decode_is_corrupt() {
        let payload = [0xFF_u8; 6];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert!(matches!(Profile::from_bytes(&bytes), Err(ProfileError::Corrupt)));
    }
}
