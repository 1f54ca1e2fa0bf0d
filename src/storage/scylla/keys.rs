//! Keys the store keeps for every node: the one submit tokens are signed with. The first open
//! of a keyspace makes it (an LWT, so two nodes opening at once agree on one); every open
//! reads it back at SERIAL.

use super::{be, lwt, serial_read};
use crate::domain::TokenKey;
use crate::storage::StoreError;
use scylla::client::session::Session;
use scylla::statement::SerialConsistency;

const SUBMIT_TOKEN: &str = "submit_token";

/// The submit-token key, made now if the keyspace has none.
pub(super) async fn submit_token_key(
    session: &Session,
    serial: SerialConsistency,
) -> Result<TokenKey, StoreError> {
    let insert = lwt(
        session
            .prepare("INSERT INTO store_keys (name, value) VALUES (?, ?) IF NOT EXISTS")
            .await
            .map_err(be)?,
        serial,
    );
    let fresh = TokenKey::generate();
    session
        .execute_unpaged(&insert, (SUBMIT_TOKEN, fresh.bytes().to_vec()))
        .await
        .map_err(be)?;
    let read = serial_read(
        session
            .prepare("SELECT value FROM store_keys WHERE name = ?")
            .await
            .map_err(be)?,
        serial,
    );
    let rows = session
        .execute_unpaged(&read, (SUBMIT_TOKEN,))
        .await
        .map_err(be)?
        .into_rows_result()
        .map_err(be)?;
    let stored = rows
        .maybe_first_row::<(Option<Vec<u8>>,)>()
        .map_err(be)?
        .and_then(|(v,)| v)
        .ok_or_else(|| StoreError::Corrupt("store_keys has no submit_token key".into()))?;
    TokenKey::from_bytes(&stored)
        .ok_or_else(|| StoreError::Corrupt("store_keys.submit_token is not a 32-byte key".into()))
}
