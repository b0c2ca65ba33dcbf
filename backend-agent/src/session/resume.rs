//! A session taken over after its agent went away: the proxy, its stream broken,
//! names the session's id and how much output it has had; the container's
//! labssh-init, which kept the process, hands it over with the output the student
//! lacks, and the session relays on as if nothing happened.
//!
//! Only this agent reaches the helper's socket (its peer check), and only an id it
//! (or its predecessor) issued names a session there: ids are 128 random bits, and
//! they are looked up in the container of the login the proxy authenticated, so
//! one student's id means nothing in another's container.

use rand::RngCore;

use super::*;

/// A fresh session id: 128 random bits in hex.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a resumed session to its end.
pub async fn run<S>(shared: Arc<Shared>, resume: pb::Resume, inbound: S, tx: OutputSender)
where
    S: Stream<Item = Result<pb::SessionInput, Status>> + Send + Unpin + 'static,
{
    let Some(start) = resume.start else {
        return refuse(&tx, SessionError::NotStart).await;
    };
    if !wire::valid_session_id(&resume.session_id) {
        let why = "this session cannot be resumed (it has no valid id)";
        return refuse(&tx, SessionError::Resume(why.to_owned())).await;
    }
    // A resumed session counts against the cap as it did; the disk quota is not
    // checked again: the session was let in.
    let _held = match shared
        .limits
        .caps
        .admit(&start.user, Kind::Session, "session")
    {
        Ok(held) => held,
        Err(e) => return refuse(&tx, e.into()).await,
    };
    // A restarted agent hears from the proxies before the controller's Welcome: the
    // catalogue is waited for, boundedly (the proxy asks again after an error only
    // when it could not reach the agent).
    tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        _ = tokio::time::timeout(crate::state::CATALOGUE_WAIT, shared.catalogue.received()) => {}
    }
    let active = shared.lifecycle.hold(&start.user, &start.environment);
    let ensure = shared.ensure(&start.user, &start.environment, start.identity.as_ref());
    let ensured = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        ensured = ensure => ensured,
    };
    let (env, ensured) = match ensured {
        Ok(ok) => ok,
        Err(e) => return refuse(&tx, e.into()).await,
    };
    let reattached = shared
        .backend
        .reattach(
            &ensured.container_id,
            &resume.session_id,
            resume.output_offset,
        )
        .await;
    let (process, attached) = match reattached {
        Ok(ok) => ok,
        Err(e) => {
            let detail = match e {
                BackendError::SpawnFailed(message) => message,
                other => other.to_string(),
            };
            tracing::info!(user = %start.user, environment = %start.environment, "session not resumed: {detail}");
            let why = if ensured.created || ensured.started {
                "your container stopped while its node was away; this session has ended".to_owned()
            } else {
                format!("this session could not be resumed: {detail}")
            };
            return refuse(&tx, SessionError::Resume(why)).await;
        }
    };
    tracing::info!(
        user = %start.user,
        environment = %start.environment,
        container = %ensured.name,
        pid = attached.pid,
        lost = attached.lost,
        "session resumed"
    );
    let _agent_peer = agent_peer(&shared, &start, &ensured.container_id, &process);
    let reply = Out::Resumed(pb::Resumed {
        container: ensured.name.clone(),
        lost_bytes: attached.lost,
        input_offset: attached.input_offset,
        input_counted: attached.counted,
        output_counted: attached.counted,
    });
    if !stream::answer(&tx, pb::SessionOutput { msg: Some(reply) }).await {
        relay::hang_up(process.control).await;
        return;
    }
    relay::relay(
        process,
        inbound,
        tx,
        &shared.shutdown,
        active.ending(),
        None,
    )
    .await;
    let logout = Target {
        user: start.user.clone(),
        env,
        container: ensured.name.clone(),
    };
    shared.hooks.fire(Event::Logout, logout);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_random_and_valid() {
        let (a, b) = (new_session_id(), new_session_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(wire::valid_session_id(&a), "{a}");
    }
}
