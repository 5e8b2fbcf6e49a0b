//! The `webhook` Lambda function: `lambda_http` around the GitHub webhook router.
//!
//! Status: not built yet (issue "The GitHub App"). Until then the binary refuses to start
//! rather than pretend to accept deliveries.

fn main() -> std::process::ExitCode {
    eprintln!("converge webhook function: not available yet (the GitHub App is not built)");
    std::process::ExitCode::FAILURE
}
