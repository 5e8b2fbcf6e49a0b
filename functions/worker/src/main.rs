//! The `worker` Lambda function: an SQS-triggered handler around the queue processor.
//!
//! Status: not built yet (issue "The worker"). Until then the binary refuses to start rather
//! than pretend to process batches.

fn main() -> std::process::ExitCode {
    eprintln!("converge worker function: not available yet (the worker is not built)");
    std::process::ExitCode::FAILURE
}
