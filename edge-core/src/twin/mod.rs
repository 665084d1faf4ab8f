//! DeviceTwin.
