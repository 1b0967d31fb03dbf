//! The lane service against `md-5`: many feeds at once, parked feeds and
//! their checkpoints.

use super::*;
use crate::tests::{sample, Cases};
use digest::Digest;

/// Many feeds at once, of pieces that leave partial blocks on both
/// sides, each continuing a hasher that already holds a partial block;
/// some say they wait for their hashes, some do not.
#[tokio::test]
async fn concurrent_feeds_match_md5_crate() {
    let mut tasks = Vec::new();
    for n in 0..40u32 {
        tasks.push(tokio::spawn(async move {
            let data = sample(5 + 70_001 * (n as usize % 7), n);
            let mut hasher = Md5::new();
            hasher.update(&data[..5]);
            let pieces = data[5..].chunks(9_999 + n as usize * 101);
            let hasher = match Feed::open(hasher) {
                Ok(feed) => {
                    feed.set_waiting(n % 3 == 0);
                    for piece in pieces {
                        feed.push(Arc::new(piece.to_vec()));
                        tokio::task::yield_now().await;
                    }
                    feed.finish().await.expect("the service hashes")
                }
                Err(mut back) => {
                    pieces.for_each(|piece| back.update(piece));
                    back
                }
            };
            assert_eq!(
                hasher.finalize()[..],
                ::md5::Md5::digest(&data)[..],
                "feed {n}"
            );
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// A checkpoint covers a prefix of what was fed; once the service
/// caught up, all of it; a parked feed goes on when fed again.
/// Random uploads through the lane service: each starts from a state
/// saved at a random point, goes on in random pieces, and ends with
/// the digest `md-5` gives the whole.
#[tokio::test]
async fn random_feeds_from_saved_states_match_md5_crate() {
    let data = sample(300_000, 11);
    let mut cases = Cases::new(0xfeed);
    for case in 0..200 {
        let len = cases.below(data.len() + 1);
        let saved_at = cases.below(len + 1);
        let mut start = Md5::new();
        start.update(&data[..saved_at]);
        let start = Md5::restore(&start.save()).expect("a saved state restores");
        let hasher = match Feed::open(start) {
            Ok(feed) => {
                let mut at = saved_at;
                for cut in cases.cuts(len - saved_at) {
                    feed.push(Arc::new(data[at..saved_at + cut].to_vec()));
                    at = saved_at + cut;
                }
                feed.push(Arc::new(data[at..len].to_vec()));
                feed.finish().await.expect("the service hashes")
            }
            // No lanes on this CPU: the one-chain kernel alone.
            Err(mut hasher) => {
                hasher.update(&data[saved_at..len]);
                hasher
            }
        };
        let expected = ::md5::Md5::digest(&data[..len]);
        assert_eq!(
            hasher.finalize()[..],
            expected[..],
            "case {case}: {saved_at} of {len}"
        );
    }
}

#[tokio::test]
async fn checkpoints_cover_what_was_hashed() {
    let data = sample(600_000, 5);
    let Ok(feed) = Feed::open(Md5::new()) else {
        return;
    };
    for piece in data[..400_000].chunks(100_000) {
        feed.push(Arc::new(piece.to_vec()));
    }
    feed.park();
    let mut seen = 0;
    while seen < 400_000 {
        let checkpoint = feed.checkpoint().expect("the service runs");
        assert!(checkpoint.hashed_len() % 100_000 == 0 && checkpoint.hashed_len() >= seen);
        seen = checkpoint.hashed_len();
        tokio::task::yield_now().await;
    }
    let checkpoint = feed.checkpoint().expect("the service runs");
    assert_eq!(
        checkpoint.finalize()[..],
        ::md5::Md5::digest(&data[..400_000])[..]
    );
    feed.push(Arc::new(data[400_000..].to_vec()));
    let hasher = feed.finish().await.expect("the service hashes");
    assert_eq!(hasher.finalize()[..], ::md5::Md5::digest(&data)[..]);
}

/// A feed dropped midway leaves nothing behind, and others go on.
#[tokio::test]
async fn abandoned_feed_is_forgotten() {
    let data = sample(300_000, 9);
    if let Ok(feed) = Feed::open(Md5::new()) {
        feed.push(Arc::new(data.clone()));
        drop(feed);
    }
    let Ok(feed) = Feed::open(Md5::new()) else {
        return;
    };
    feed.push(Arc::new(data.clone()));
    let hasher = feed.finish().await.expect("the service hashes");
    assert_eq!(hasher.finalize()[..], ::md5::Md5::digest(&data)[..]);
}
