//! The `portcullis` binary as a child process.

/// A child process (the `portcullis` binary), killed on drop so that a failed test leaks none.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
