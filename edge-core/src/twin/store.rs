//! DeviceTwin's LMDB databases, in the environment edgecore already opened.
//!
//! `twin_devices`: device id → `{namespace, name, state}` (JSON);
//! `twin_twins`: device id → the device's twins, property name → `MsgTwin`
//! (JSON, KubeEdge's shape). Both are written in one transaction.
//!
//! The environment must allow two more named databases than its other users
//! create (`EnvOpenOptions::max_dbs`), and its map must hold the devices'
//! twins (a few KB per device).

use std::collections::BTreeMap;

use heed::types::{Bytes, Str};
use heed::{CommitOrAbort, Database, Env};
use serde::{Deserialize, Serialize};

use super::TwinError;
use super::payload::MsgTwin;

/// A device known to the edge and its twins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub namespace: String,
    pub name: String,
    /// Last state the device reported on `…/state/update` ("online"…).
    #[serde(default)]
    pub state: String,
    #[serde(skip)]
    pub twins: BTreeMap<String, MsgTwin>,
}

#[derive(Debug)]
pub(crate) struct Store {
    env: Env,
    devices: Database<'static, Str, Bytes>,
    twins: Database<'static, Str, Bytes>,
}

impl Store {
    pub(crate) fn open(env: &Env) -> Result<Self, TwinError> {
        let wtxn = env.write_txn()?;
        let (devices, twins) = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, heed::Error> {
                let d = dbo.create_database::<Str, Bytes>(wtxn, Some("twin_devices"))?;
                let t = dbo.create_database::<Str, Bytes>(wtxn, Some("twin_twins"))?;
                Ok(CommitOrAbort::<_, ()>::Commit((d, t)))
            })?
            .unwrap_commit();
        Ok(Store {
            env: env.clone(),
            devices,
            twins,
        })
    }

    /// Every stored device, by id.
    pub(crate) fn load_all(&self) -> Result<BTreeMap<String, Device>, TwinError> {
        let rtxn = self.env.read_txn()?;
        let mut out = BTreeMap::new();
        for item in self.devices.iter(&rtxn)? {
            let (id, bytes) = item?;
            let mut d: Device = serde_json::from_slice(bytes)
                .map_err(|e| TwinError::Corrupt(id.to_owned(), e.to_string()))?;
            if let Some(t) = self.twins.get(&rtxn, id)? {
                d.twins = serde_json::from_slice(t)
                    .map_err(|e| TwinError::Corrupt(id.to_owned(), e.to_string()))?;
            }
            out.insert(id.to_owned(), d);
        }
        Ok(out)
    }

    /// Writes `device` under `id` and commits.
    pub(crate) fn put(&self, id: &str, device: &Device) -> Result<(), TwinError> {
        let d = serde_json::to_vec(device)
            .map_err(|e| TwinError::Corrupt(id.to_owned(), e.to_string()))?;
        let t = serde_json::to_vec(&device.twins)
            .map_err(|e| TwinError::Corrupt(id.to_owned(), e.to_string()))?;
        let mut wtxn = self.env.write_txn()?;
        self.devices.put(&mut wtxn, id, &d)?;
        self.twins.put(&mut wtxn, id, &t)?;
        wtxn.commit()?;
        Ok(())
    }

    /// Removes the device `id` and commits.
    pub(crate) fn delete(&self, id: &str) -> Result<(), TwinError> {
        let mut wtxn = self.env.write_txn()?;
        self.devices.delete(&mut wtxn, id)?;
        self.twins.delete(&mut wtxn, id)?;
        wtxn.commit()?;
        Ok(())
    }
}
