//! rkyv records read back from disk or shared memory: validation refuses
//! whatever is not a record, and whatever it accepts reads and re-encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::records::{self, DownRecord, OutboxEntry, StoredObject, UpRecord};

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = records::from_bytes::<StoredObject>(data) {
        assert_eq!(
            records::from_bytes::<StoredObject>(&records::to_bytes(&object)).unwrap(),
            object
        );
    }
    if let Ok(entry) = records::from_bytes::<OutboxEntry>(data) {
        assert_eq!(
            records::from_bytes::<OutboxEntry>(&records::to_bytes(&entry)).unwrap(),
            entry
        );
    }
    if let Ok(record) = records::from_bytes::<DownRecord>(data) {
        assert_eq!(
            records::from_bytes::<DownRecord>(&records::to_bytes(&record)).unwrap(),
            record
        );
    }
    if let Ok(record) = records::from_bytes::<UpRecord>(data) {
        assert_eq!(
            records::from_bytes::<UpRecord>(&records::to_bytes(&record)).unwrap(),
            record
        );
    }
});
