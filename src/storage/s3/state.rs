//! What an upload in progress holds in the bucket, written next to its
//! bytes: a state object per offset reached, naming the multipart upload's
//! parts and the tail pieces (bytes not yet in a part). A state is written
//! before its offset is committed and never changed after, so the state of
//! the committed offset always describes bytes that are all in the bucket;
//! states and pieces of requests that never committed are removed when the
//! upload is next opened.

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

pub fn parse_piece(name: &str) -> Option<Piece> {
    let (start, end) = name.strip_prefix(TAIL)?.split_once('-')?;
    Some(Piece {
        start: start.parse().ok()?,
        end: end.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        let piece = Piece {
            start: 5 << 20,
            end: 6 << 20,
        };
        assert_eq!(parse_piece(&piece_name(piece)), Some(piece));
        assert_eq!(parse_state(&state_name(1234)), Some(1234));
        assert_eq!(parse_state(MULTIPART), None);
        assert_eq!(parse_piece(&state_name(1)), None);
    }
}
