//! The application's end of chunkd's outgoing calls (webhooks, the
//! pre-create hook): an HTTP server in the test that answers each POST as
//! the test says and records it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One POST the receiver got, and how it answered.
pub struct Delivery {
    pub path: String,
    /// Names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

pub type Deliveries = Arc<Mutex<Vec<Delivery>>>;

/// How the receiver answers the `n`th request (from 0): a status and a
/// body.
pub type Answer = Box<dyn Fn(usize, &Delivery) -> (u16, String) + Send>;

pub struct Receiver {
    pub addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on `addr`, answers each request as `answer` says and
    /// records it in `deliveries`.
    pub fn start(addr: &str, answer: Answer, deliveries: Deliveries) -> Receiver {
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut answered = 0;
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let delivery = serve(stream, |delivery| answer(answered, delivery));
                        answered += 1;
                        deliveries.lock().unwrap().push(delivery);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops listening: calls now find the port closed.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
    }
}

/// Reads one request and answers it.
fn serve(mut stream: TcpStream, answer: impl FnOnce(&Delivery) -> (u16, String)) -> Delivery {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    assert!(request_line.starts_with("POST "), "{head}");
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    let mut body = vec![0; headers["content-length"].parse().unwrap()];
    stream.read_exact(&mut body).unwrap();
    let mut delivery = Delivery {
        path: request_line.split(' ').nth(1).unwrap().to_owned(),
        headers,
        body,
        status: 0,
    };
    let (status, reply) = answer(&delivery);
    delivery.status = status;
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    stream.write_all(response.as_bytes()).unwrap();
    delivery
}
