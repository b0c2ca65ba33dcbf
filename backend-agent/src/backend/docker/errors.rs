//! Docker's error responses, read for their message and their HTTP status.

use bollard::errors::Error as DockerError;

/// Docker's own message for an error response, else bollard's description.
pub fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        other => other.to_string(),
    }
}

/// The HTTP status of Docker's error response, if it answered at all.
pub fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}
