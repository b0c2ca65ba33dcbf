//! Services a student shares publicly (`ssh alice+@lab share 8080-alice`): anyone may
//! open them through the web front door, logged in or not, until `unshare`. Kept in
//! Redis, which every SSH and web replica of a deployment shares: `labssh:share:NAME`
//! holds the owner's login name, `labssh:shares:USER` the set of their shared names.
//! Without Redis there is no sharing, and a Redis that does not answer shares nothing
//! (the front door then treats every service as private).

use crate::redis_link::RedisLink;

/// Why a share could not be changed, for the student.
pub const NO_REDIS: &str =
    "sharing services needs the gateway's Redis (redis_url), and this one has none; ask your operator";
const DOWN: &str = "the gateway's Redis does not answer; try again in a minute";

fn key(name: &str) -> String {
    format!("labssh:share:{name}")
}

fn set_key(user: &str) -> String {
    format!("labssh:shares:{user}")
}

/// Makes `user`'s service `name` public.
pub async fn share(redis: Option<&RedisLink>, user: &str, name: &str) -> Result<(), String> {
    let redis = redis.ok_or(NO_REDIS)?;
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg(key(name))
        .arg(user)
        .ignore()
        .cmd("SADD")
        .arg(set_key(user))
        .arg(name)
        .ignore();
    redis.pipe::<()>(&pipe).await.ok_or_else(|| DOWN.to_owned())
}

/// Makes it private again; whether it was shared.
pub async fn unshare(redis: Option<&RedisLink>, user: &str, name: &str) -> Result<bool, String> {
    let redis = redis.ok_or(NO_REDIS)?;
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("DEL")
        .arg(key(name))
        .cmd("SREM")
        .arg(set_key(user))
        .arg(name);
    let (deleted, _): (u32, u32) = redis.pipe(&pipe).await.ok_or_else(|| DOWN.to_owned())?;
    Ok(deleted > 0)
}

/// The names `user` shares, sorted.
pub async fn shared_by(redis: Option<&RedisLink>, user: &str) -> Result<Vec<String>, String> {
    let redis = redis.ok_or(NO_REDIS)?;
    let mut names: Vec<String> = redis
        .query(redis::cmd("SMEMBERS").arg(set_key(user)))
        .await
        .ok_or_else(|| DOWN.to_owned())?;
    names.sort();
    Ok(names)
}

/// Who shares `name` publicly, if anyone does (and Redis answers).
pub async fn owner(redis: Option<&RedisLink>, name: &str) -> Option<String> {
    let owner: Option<String> = redis?.query(redis::cmd("GET").arg(key(name))).await?;
    // Only a name of the owner's own form counts, whatever the store says.
    owner.filter(|o| labssh_proto::services::could_be_of(name, o))
}
