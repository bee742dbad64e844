//! The TCP front: a listener created inside the collector's network namespace that forwards
//! to the endpoint (or a live GreptimeDB) on the host's loopback, and can refuse connections
//! for a while.

use super::*;

/// Creates a listening socket inside a network namespace (or here, for `None`).
pub(super) fn listen_in(netns: Option<&str>, addr: SocketAddr) -> std::net::TcpListener {
    let ns = netns.map(str::to_owned);
    std::thread::spawn(move || {
        if let Some(ns) = ns {
            let path = CString::new(format!("/run/netns/{ns}")).unwrap();
            // SAFETY: plain syscalls with checked results, on this thread only.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                assert!(fd >= 0, "open netns {ns}");
                assert_eq!(libc::setns(fd, libc::CLONE_NEWNET), 0, "setns {ns}");
                libc::close(fd);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => {
                    l.set_nonblocking(true).unwrap();
                    return l;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        }
    })
    .join()
    .unwrap()
}

/// Forwards connections from `listener` to `backend` until `stop` turns true, then closes
/// the listener and every forwarded connection.
async fn front(
    listener: std::net::TcpListener,
    backend: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((mut client, _)) = accepted else { continue };
                // A front that adds no delay of its own: GreptimeDB sets TCP_NODELAY on
                // its connections, as the collector does on its own.
                let _ = client.set_nodelay(true);
                conns.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(backend).await {
                        let _ = server.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }
    }
    conns.abort_all();
}

/// The running front: its stop switch and its task.
type Front = (watch::Sender<bool>, JoinHandle<()>);

/// Forwards TCP connections made to 127.0.0.1:`addr` inside a namespace to a backend
/// address reachable from the test process (the test endpoint, or a live GreptimeDB).
pub struct Forwarder {
    pub addr: SocketAddr,
    netns: Option<String>,
    backend: SocketAddr,
    front: Arc<Mutex<Option<Front>>>,
    runtime: tokio::runtime::Handle,
}

impl Forwarder {
    pub fn start(
        runtime: tokio::runtime::Handle,
        netns: Option<&str>,
        backend: SocketAddr,
    ) -> Self {
        let listener = listen_in(netns, "127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let task = runtime.spawn(front(listener, backend, stopped));
        Self {
            addr,
            netns: netns.map(str::to_owned),
            backend,
            front: Arc::new(Mutex::new(Some((stop, task)))),
            runtime,
        }
    }

    /// Refuses connections (and drops open ones) now, for `d`; returns at once.
    pub fn refuse_for(&self, d: Duration) {
        if let Some((stop, task)) = self.front.lock().unwrap().take() {
            let _ = stop.send(true);
            // Wait (on a plain thread) until the listener and connections are gone.
            let rt = self.runtime.clone();
            std::thread::spawn(move || rt.block_on(task))
                .join()
                .unwrap()
                .unwrap();
        }
        let (front_slot, netns, addr, backend) = (
            Arc::clone(&self.front),
            self.netns.clone(),
            self.addr,
            self.backend,
        );
        let handle = self.runtime.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            let listener = listen_in(netns.as_deref(), addr);
            let (stop, stopped) = watch::channel(false);
            let task = handle.spawn(front(listener, backend, stopped));
            *front_slot.lock().unwrap() = Some((stop, task));
        });
    }
}
