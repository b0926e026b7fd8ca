//! The optional replay store shared by every replica (`dpop.replay_store`): Redis or Valkey,
//! one `SET key 1 NX PX <ms>` per accepted proof (RFC 9449 §11.1 across replicas). The key is
//! the same SHA-256 the local cache uses, never the proof. Bounded by a timeout; any failure
//! is reported, and the caller refuses the request (fail closed).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;

use super::replay::Key;
use crate::config::ReplayStoreSettings;

/// What the store said about a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreAnswer {
    /// Recorded now: first use anywhere.
    First,
    /// Already recorded by some replica.
    Seen,
}

/// One store (one URL), its connection made on first use and remade after a failure.
pub struct SharedStore {
    client: redis::Client,
    timeout: Duration,
    conn: ArcSwapOption<MultiplexedConnection>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SharedStore {
    pub fn new(settings: &ReplayStoreSettings) -> Option<SharedStore> {
        Some(SharedStore {
            client: redis::Client::open(settings.url.as_str()).ok()?,
            timeout: Duration::from_millis(settings.timeout_ms),
            conn: ArcSwapOption::empty(),
        })
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout.as_millis() as u64
    }

    /// Record `key` for `ttl_ms`, or say another replica did. `Err` for a timeout or any
    /// store error: the caller fails closed.
    pub async fn record(&self, key: &Key, ttl_ms: u64) -> Result<StoreAnswer, ()> {
        let name = format!("mcp-authz:dpop:{}", hex(key));
        let attempt = async {
            let mut conn = match self.conn.load_full() {
                Some(c) => (*c).clone(),
                None => {
                    let c = self
                        .client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|_| ())?;
                    self.conn.store(Some(Arc::new(c.clone())));
                    c
                }
            };
            redis::cmd("SET")
                .arg(&name)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms.max(1))
                .query_async::<Option<String>>(&mut conn)
                .await
                .map_err(|_| ())
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(Some(_))) => Ok(StoreAnswer::First),
            Ok(Ok(None)) => Ok(StoreAnswer::Seen),
            Ok(Err(())) | Err(_) => {
                // The next proof reconnects.
                self.conn.store(None);
                Err(())
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
