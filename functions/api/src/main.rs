//! The `api` Lambda function: `lambda_http` around the API router of `converge-http`.
//!
//! Status: not built yet (issue "The HTTP API"). Until then the binary refuses to start
//! rather than pretend to serve.

fn main() -> std::process::ExitCode {
    eprintln!("converge api function: not available yet (the HTTP API is not built)");
    std::process::ExitCode::FAILURE
}
