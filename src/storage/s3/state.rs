//! What an upload in progress holds in the bucket, written next to its
//! bytes: a state object per offset reached, naming the multipart upload's
//! parts and the tail pieces (bytes not yet in a part). A state is written
//! before its offset is committed and never changed after, so the state of
//! the committed offset always describes bytes that are all in the bucket.
//! A committed state names what it made obsolete (the state before it, the
//! pieces that went into parts), deleted when the upload is next opened;
//! what requests that never committed wrote goes with the whole upload.

use serde::{Deserialize, Serialize};

/// The multipart upload of an upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Multipart {
    pub id: String,
    /// Size of every part but the last (equal parts: R2 requires them).
    pub part_size: u64,
}

/// One upload's bytes up to `len`: whole parts, then tail pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    pub len: u64,
    pub multipart: Option<Multipart>,
    /// ETags of parts 1, 2, …, each `part_size` bytes.
    pub parts: Vec<String>,
    /// Tail pieces, in order, from the end of the parts to `len`.
    pub tail: Vec<Piece>,
    /// Tail pieces that went into parts since the state before.
    #[serde(default)]
    pub consumed: Vec<Piece>,
    /// The offset of the state before, which this one replaces.
    #[serde(default)]
    pub previous: Option<u64>,
}

/// Bytes `start..end` of an upload, stored as an object of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub start: u64,
    pub end: u64,
}

impl UploadState {
    /// Bytes held by tail pieces.
    pub fn in_tail(&self) -> u64 {
        self.tail.iter().map(|piece| piece.end - piece.start).sum()
    }
}

/// Names of the objects under an upload's in-progress prefix.
const STATE: &str = "state-";
const TAIL: &str = "tail-";
/// The multipart upload made for the upload, recorded before any part goes
/// in: a request that dies before its state is written leaves it findable.
pub const MULTIPART: &str = "multipart";

pub fn state_name(len: u64) -> String {
    format!("{STATE}{len:020}.json")
}

pub fn piece_name(piece: Piece) -> String {
    format!("{TAIL}{:020}-{:020}", piece.start, piece.end)
}

/// The offset of a state object's name.
pub fn parse_state(name: &str) -> Option<u64> {
    name.strip_prefix(STATE)?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_parse_back() {
        assert_eq!(parse_state(&state_name(1234)), Some(1234));
        assert_eq!(parse_state(MULTIPART), None);
        let piece = Piece { start: 0, end: 1 };
        assert_eq!(parse_state(&piece_name(piece)), None);
    }
}
