//! IMDS emulator (in progress)
