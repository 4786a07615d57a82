//! S3 settings the way AWS tools find them: the `AWS_*` environment variables first, then
//! the shared files (`~/.aws/credentials`, `~/.aws/config`, or `AWS_SHARED_CREDENTIALS_FILE`
//! and `AWS_CONFIG_FILE`) for the profile `AWS_PROFILE` (default `default`).
//!
//! object_store reads the variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, web
//! identity, ECS container credentials, and instance metadata when nothing else is
//! set) but not the shared files; this module adds those: a profile's
//! `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`, `region` and
//! `endpoint_url`. A variable always wins over a file.

use std::{collections::BTreeMap, path::PathBuf};

/// What the shared files say for one profile (keys lowercased).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Profile {
    pub values: BTreeMap<String, String>,
    /// The files read, for messages.
    pub files: Vec<PathBuf>,
}

impl Profile {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// Reads profile `name` from the credentials file, then the config file (where its
/// section is `[profile NAME]`, or `[default]`); the credentials file wins.
pub fn read_profile(
    name: &str,
    credentials: Option<PathBuf>,
    config: Option<PathBuf>,
) -> Result<Profile, String> {
    let mut p = Profile::default();
    let mut read = |path: Option<PathBuf>, section: &str| -> Result<(), String> {
        let Some(path) = path.filter(|p| p.is_file()) else {
            return Ok(());
        };
        let ini = ini::Ini::load_from_file_noescape(&path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        if let Some(props) = ini.section(Some(section)) {
            for (k, v) in props.iter() {
                p.values
                    .entry(k.trim().to_ascii_lowercase())
                    .or_insert_with(|| v.trim().to_string());
            }
        }
        p.files.push(path);
        Ok(())
    };
    read(credentials, name)?;
    let config_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    read(config, &config_section)?;
    Ok(p)
}

/// The shared files of this environment and the profile it names.
pub fn env_profile() -> Result<Profile, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let name = std::env::var("AWS_PROFILE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    read_profile(
        &name,
        file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        file("AWS_CONFIG_FILE", "config"),
    )
}

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|s| !s.is_empty())
}

/// Settings for an S3 client, resolved from the environment and the shared files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct S3Settings {
    /// `(object_store config key, value)` pairs, variables first.
    pub config: Vec<(String, String)>,
    /// The endpoint, when not AWS itself (`AWS_ENDPOINT_URL`, or `endpoint_url`).
    pub endpoint: Option<String>,
    pub region: String,
}

/// Resolves the settings: every `AWS_*` variable object_store knows, then what the
/// profile adds for keys no variable set.
pub fn s3_settings(profile: &Profile) -> S3Settings {
    let mut config: Vec<(String, String)> = std::env::vars()
        .filter(|(k, v)| k.starts_with("AWS_") && !v.is_empty())
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    config.sort();
    if env("AWS_ACCESS_KEY_ID").is_none() {
        for key in [
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_session_token",
        ] {
            if let Some(v) = profile.get(key) {
                config.push((key.to_string(), v.to_string()));
            }
        }
    }
    let region = env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| profile.get("region").map(str::to_string))
        .unwrap_or_else(|| "us-east-1".into());
    let endpoint = env("AWS_ENDPOINT_URL_S3")
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| env("AWS_ENDPOINT"))
        .or_else(|| profile.get("endpoint_url").map(str::to_string));
    S3Settings {
        config,
        endpoint,
        region,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_from_the_shared_files() {
        let d = tempfile::tempdir().unwrap();
        let creds = d.path().join("credentials");
        let config = d.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = s1\n\n\
             [team]\n# a comment\naws_access_key_id=AKTEAM\naws_secret_access_key=s2\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion = eu-west-1\n\n[profile team]\nregion = us-west-2\n\
             endpoint_url = http://127.0.0.1:9000\naws_access_key_id = IGNORED\n",
        )
        .unwrap();
        let p = read_profile("team", Some(creds.clone()), Some(config.clone())).unwrap();
        assert_eq!(
            p.get("aws_access_key_id"),
            Some("AKTEAM"),
            "credentials file wins"
        );
        assert_eq!(p.get("region"), Some("us-west-2"));
        assert_eq!(p.get("endpoint_url"), Some("http://127.0.0.1:9000"));
        let p = read_profile("default", Some(creds), Some(config)).unwrap();
        assert_eq!(p.get("aws_secret_access_key"), Some("s1"));
        assert_eq!(p.get("region"), Some("eu-west-1"));
        let none = read_profile("nobody", None, Some(d.path().join("absent"))).unwrap();
        assert!(none.values.is_empty());
    }
}
