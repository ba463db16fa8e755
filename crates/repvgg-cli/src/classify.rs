//! `repvgg classify`: top-k classes of images (files, folders, globs) with the embedded digits
//! model, an ImageNet checkpoint (`--weights`) or one from the Hugging Face hub (`--hf`).
//!
//! Images are preprocessed as timm's pretrained config of the variant
//! ([`repvgg_model::preprocess::PretrainedConfig`]); the digits model gets its own grayscale 8x8
//! preprocessing ([`repvgg_model::preprocess::digits_input`]). An image that cannot be read is
//! reported by name and skipped; the command then fails at the end ("2 of 5 images failed").

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::ProgressBar;
use ndarray::{Array4, Axis, concatenate};
use repvgg_model::preprocess;
use repvgg_model::{Model, ModelError, Runner};
use serde::Serialize;

use crate::DeviceArgs;

/// Images (JPEG, PNG, WebP) per forward call.
const CHUNK: usize = 8;
/// The file `--hf` downloads.
const HF_FILE: &str = "model.safetensors";
/// How long `--hf` waits for the hub to answer a TCP connect before giving up.
const HUB_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Extensions a folder's files must have to be classified.
const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

#[derive(clap::Args, Debug)]
pub(crate) struct ClassifyArgs {
    /// Images (JPEG, PNG, WebP), folders (every image inside, sorted) or glob patterns ("shots/*.jpg").
    #[arg(required = true, value_name = "IMG")]
    pub inputs: Vec<PathBuf>,
    /// An ImageNet checkpoint (.safetensors; timm or official naming, train or deploy form).
    /// Without --weights or --hf the embedded digits model is used.
    #[arg(long, conflicts_with = "hf")]
    pub weights: Option<PathBuf>,
    /// Download `model.safetensors` of a Hugging Face model repo into the hub cache, e.g.
    /// timm/repvgg_a0.rvgg_in1k. HF_HUB_OFFLINE=1 uses the cache only; HF_HOME and HF_ENDPOINT apply.
    #[arg(long, value_name = "REPO")]
    pub hf: Option<String>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5, value_parser = parse_top)]
    pub top: usize,
    #[command(flatten)]
    pub run: DeviceArgs,
    /// One JSON array on stdout: `{path, top: [{index, label, prob}]}` or `{path, error}` per image.
    #[arg(long)]
    pub json: bool,
}

fn parse_top(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|&k| k > 0)
        .ok_or_else(|| format!("`{s}`: expected a whole number of classes, at least 1"))
}

/// One of the top-k classes of an image.
#[derive(Debug, Clone, Serialize)]
struct Guess {
    index: usize,
    label: String,
    prob: f32,
}

/// The outcome for one input: its top-k, or why it failed.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Outcome {
    Ok { path: String, top: Vec<Guess> },
    Err { path: String, error: String },
}

/// The model of `classify`: `--weights`, `--hf`, or the embedded digits model.
fn load_model(a: &ClassifyArgs) -> Result<Model> {
    let weights = match (&a.weights, &a.hf) {
        (Some(w), _) => Some(w.clone()),
        (None, Some(repo)) => Some(hf_weights(repo, !a.json)?),
        (None, None) => None,
    };
    let Some(path) = weights else {
        return Ok(Model::digits()?);
    };
    let model = Model::load(&path)?;
    let channels = model.config().in_channels;
    if channels != 3 {
        bail!(
            "{}: the model takes {channels} input channel(s); classify feeds RGB images (3 channels)",
            path.display(),
        );
    }
    Ok(model)
}

/// An image file as the runner's model input.
fn input(runner: &Runner, path: &Path) -> repvgg_model::Result<Array4<f32>> {
    runner.preprocessing().input(&preprocess::load_rgb(path)?)
}

fn is_image_file(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn folder_images(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read folder: {e}"))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_image_file(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err("no JPEG, PNG or WebP images in this folder".into());
    }
    Ok(files)
}

/// Expands the command line into image paths, or per-input errors (empty folder, glob with no
/// match). A path that does not exist and is no pattern stays, to fail by name when read.
pub(crate) fn expand(inputs: &[PathBuf]) -> Vec<Result<PathBuf, (String, String)>> {
    let mut out = Vec::new();
    for input in inputs {
        let shown = input.display().to_string();
        if input.is_dir() {
            match folder_images(input) {
                Ok(files) => out.extend(files.into_iter().map(Ok)),
                Err(e) => out.push(Err((shown, e))),
            }
            continue;
        }
        let text = input.to_string_lossy();
        if input.exists() || !text.contains(['*', '?', '[']) {
            out.push(Ok(input.clone()));
            continue;
        }
        let paths = match glob::glob(&text) {
            Ok(paths) => paths,
            Err(e) => {
                out.push(Err((shown, format!("invalid glob pattern: {e}"))));
                continue;
            }
        };
        let mut matched = Vec::new();
        for p in paths {
            match p {
                Ok(p) if p.is_dir() => match folder_images(&p) {
                    Ok(files) => matched.extend(files),
                    Err(e) => out.push(Err((p.display().to_string(), e))),
                },
                Ok(p) => matched.push(p),
                Err(e) => out.push(Err((e.path().display().to_string(), e.error().to_string()))),
            }
        }
        if matched.is_empty() {
            out.push(Err((shown, "no file matches this pattern".into())));
        }
        out.extend(matched.into_iter().map(Ok));
    }
    out
}

/// Why an image failed, without its path (printed beside it).
fn describe(e: &ModelError) -> String {
    match e {
        ModelError::Io { error, .. } => format!("cannot read: {error}"),
        ModelError::Image { reason, .. } => {
            format!("not a readable JPEG, PNG or WebP image ({reason})")
        }
        other => other.to_string(),
    }
}

fn print_outcome(o: &Outcome, pb: &ProgressBar, json: bool, short: impl Fn(usize) -> String) {
    match o {
        Outcome::Ok { path, top } => {
            if !json {
                let list: Vec<String> = top
                    .iter()
                    .map(|g| format!("{} ({:.1}%)", short(g.index), 100.0 * g.prob))
                    .collect();
                pb.suspend(|| println!("{path}: {}", list.join(", ")));
            }
        }
        Outcome::Err { path, error } => pb.suspend(|| eprintln!("error: {path}: {error}")),
    }
}

pub(crate) fn run(a: &ClassifyArgs) -> Result<()> {
    let model = crate::quantize::prepare(load_model(a)?, &a.run)?;
    let runner = model.runner(a.run.options())?;
    let items = expand(&a.inputs);
    let total = items.len();
    let k = a.top.min(model.num_classes());
    let pb = crate::demo::spinner("classifying");
    pb.set_length(total as u64);
    let short = |i: usize| runner.labels(i).1;
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(total);
    for chunk in items.chunks(CHUNK) {
        // Preprocess every image of the chunk; the readable ones go through one forward call.
        let mut slots: Vec<Option<Outcome>> = Vec::with_capacity(chunk.len());
        let mut batch: Vec<(usize, String, Array4<f32>)> = Vec::new();
        for item in chunk {
            match item {
                Err((path, error)) => slots.push(Some(Outcome::Err {
                    path: path.clone(),
                    error: error.clone(),
                })),
                Ok(path) => {
                    let shown = path.display().to_string();
                    pb.set_message(shown.clone());
                    match input(&runner, path) {
                        Ok(x) => {
                            batch.push((slots.len(), shown, x));
                            slots.push(None);
                        }
                        Err(e) => slots.push(Some(Outcome::Err {
                            path: shown,
                            error: describe(&e),
                        })),
                    }
                }
            }
        }
        if !batch.is_empty() {
            let views: Vec<_> = batch.iter().map(|(_, _, x)| x.view()).collect();
            let x = concatenate(Axis(0), &views).context("stacking the batch")?;
            // A failed forward call fails this chunk's images, by name; the others go on.
            match runner.run(x.view()) {
                Ok(logits) => {
                    let tops = runner.top_classes(logits.view(), k);
                    for (top, (slot, path, _)) in tops.into_iter().zip(batch) {
                        let top = top
                            .into_iter()
                            .map(|c| Guess {
                                index: c.index,
                                label: c.label,
                                prob: c.prob,
                            })
                            .collect();
                        slots[slot] = Some(Outcome::Ok { path, top });
                    }
                }
                Err(e) => {
                    let error = format!("{e:#}").replace('\n', " ");
                    for (slot, path, _) in batch {
                        slots[slot] = Some(Outcome::Err {
                            path,
                            error: error.clone(),
                        });
                    }
                }
            }
        }
        for o in slots.into_iter().flatten() {
            print_outcome(&o, &pb, a.json, short);
            pb.inc(1);
            outcomes.push(o);
        }
    }
    pb.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    }
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Err { .. }))
        .count();
    if failed > 0 {
        bail!("{failed} of {total} images failed");
    }
    Ok(())
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "on" | "yes" | "true"
        )
    })
}

/// `model.safetensors` of a hub repo: from the cache when there, else downloaded after a quick
/// reachability check, so that no network means a fast, clear error rather than a hang.
fn hf_weights(repo: &str, progress: bool) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    if let Some(p) = cache.model(repo.to_string()).get(HF_FILE) {
        return Ok(p);
    }
    let instead = format!("download {HF_FILE} of {repo} elsewhere and pass --weights FILE");
    if env_flag("HF_HUB_OFFLINE") {
        bail!(
            "HF_HUB_OFFLINE is set and {repo} is not in the Hugging Face cache ({}); {instead}",
            cache.path().display()
        );
    }
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let target = proxy_from_env().unwrap_or_else(|| endpoint.clone());
    probe(&target, HUB_PROBE_TIMEOUT).map_err(|why| {
        anyhow!("the Hugging Face hub ({endpoint}) is unreachable: {why}; {instead}")
    })?;
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(progress)
        .build()?;
    api.model(repo.to_string())
        .get(HF_FILE)
        .with_context(|| format!("downloading {HF_FILE} of {repo} from {endpoint}; or {instead}"))
}

/// The proxy ureq (hf-hub's HTTP client) would use, if any.
fn proxy_from_env() -> Option<String> {
    [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
}

/// `host` and `port` of a URL such as `https://huggingface.co` or `http://proxy:3128/`.
fn host_port(url: &str) -> Result<(String, u16), String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        443
    };
    // `host:port`, `[v6]:port`; a last `:` not followed by a port (`[::1]`) is part of the host.
    let (host, port) = authority
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h, p)))
        .unwrap_or((authority, default_port));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("no host in `{url}`"));
    }
    Ok((host.to_string(), port))
}

/// Resolves the URL's host and opens a TCP connection, all within `timeout` (in a thread, so a
/// hanging DNS lookup cannot block the command).
fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let (host, port) = host_port(url)?;
    let (tx, rx) = mpsc::channel();
    let (h, t) = (host.clone(), timeout);
    std::thread::spawn(move || {
        let result = (|| {
            let addrs: Vec<_> = (h.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {h}: {e}"))?
                .collect();
            let mut last = format!("{h} has no address");
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, t) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("cannot connect to {h}:{port}: {e}"),
                }
            }
            Err(last)
        })();
        let _ = tx.send(result);
    });
    rx.recv_timeout(timeout + Duration::from_millis(200))
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {host}:{port} within {} s",
                timeout.as_secs()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            host_port("https://huggingface.co"),
            Ok(("huggingface.co".into(), 443))
        );
        assert_eq!(
            host_port("http://127.0.0.1:9/x"),
            Ok(("127.0.0.1".into(), 9))
        );
        assert_eq!(
            host_port("http://user:pw@proxy:3128"),
            Ok(("proxy".into(), 3128))
        );
        assert_eq!(host_port("https://[::1]:8443/"), Ok(("::1".into(), 8443)));
        assert_eq!(host_port("https://[::1]"), Ok(("::1".into(), 443)));
        assert!(host_port("https://").is_err());
    }
}
