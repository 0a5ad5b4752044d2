//! A TCP proxy in front of the server that can hold the bytes of either
//! direction and then reset every connection: a call sent while the
//! client-to-server direction is held never reaches the server; one sent
//! while the server-to-client direction is held is applied, but its reply
//! is lost. The client sees "Connection reset by peer", reconnects through
//! the proxy, and its session survives.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the connections do now.
#[derive(Debug, Clone, Copy, Default)]
struct Control {
    hold_up: bool,
    hold_down: bool,
    /// Bumped by [`Proxy::cut`]; a connection older than it resets.
    cuts: u64,
}

/// The proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// `host:port` to give the client instead of the server's.
    pub hosts: String,
    control: watch::Sender<Control>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr: SocketAddr = listener.local_addr().expect("proxy address");
        let (control, _) = watch::channel(Control::default());
        let upstream = upstream.to_owned();
        let subscribe = control.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pipe(client, upstream.clone(), subscribe.subscribe()));
            }
        });
        Self {
            hosts: addr.to_string(),
            control,
            task,
        }
    }

    /// Holds the bytes going to the server (`up`) and/or coming back.
    pub fn hold(&self, up: bool, down: bool) {
        self.control.send_modify(|c| {
            c.hold_up = up;
            c.hold_down = down;
        });
    }

    /// Resets every open connection (what the client sees when a server
    /// goes away) and holds nothing any more.
    pub fn cut(&self) {
        self.control.send_modify(|c| {
            c.hold_up = false;
            c.hold_down = false;
            c.cuts += 1;
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(mut client: TcpStream, upstream: String, mut control: watch::Receiver<Control>) {
    let born = control.borrow().cuts;
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    // Closing with a zero linger sends a reset, not a FIN.
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    loop {
        let now = *control.borrow_and_update();
        if now.cuts != born {
            return;
        }
        tokio::select! {
            changed = control.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = client_read.read(&mut up), if !now.hold_up => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if server_write.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                }
            },
            read = server_read.read(&mut down), if !now.hold_down => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if client_write.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}
