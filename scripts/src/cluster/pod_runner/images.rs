//! The image → binary mapping (`scripts/cluster/process-images.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    images: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    binary: PathBuf,
    build: Option<String>,
    entrypoint: Option<String>,
}

/// What a pod's image runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Absolute path of the executable.
    pub binary: PathBuf,
    /// The name `command[0]` must carry to mean this binary.
    pub entrypoint: String,
}

pub struct Images {
    path: PathBuf,
    root: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl Images {
    /// Read and parse the mapping; `root` anchors relative binary paths.
    pub fn load(path: &Path, root: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        Self::parse(&text, path, root)
    }

    fn parse(text: &str, path: &Path, root: &Path) -> Result<Self, Error> {
        let file: File = toml::from_str(text).map_err(|e| Error::ImagesFile {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_owned(),
            root: root.to_owned(),
            entries: file.images,
        })
    }

    /// The binary for `image`, which must exist: a missing mapping or binary is
    /// the process runtime's equivalent of an image pull failure.
    pub fn resolve(&self, image: &str) -> Result<Image, Error> {
        let Some(entry) = self.entries.get(image) else {
            return Err(Error::Container {
                reason: "ErrImagePull",
                message: format!(
                    "image {image:?} is not mapped to a binary in {}",
                    self.path.display()
                ),
            });
        };
        // `target/…` follows CARGO_TARGET_DIR (CI keeps the target directory
        // under $HOME); other relative paths are relative to the repository.
        let binary = match Path::new(&entry.binary).strip_prefix("target") {
            Ok(rest) if std::env::var_os("CARGO_TARGET_DIR").is_some() => {
                crate::paths::target_dir().join(rest)
            }
            _ => self.root.join(&entry.binary),
        };
        if !binary.is_file() {
            let hint = match &entry.build {
                Some(build) => format!("; build it with `{build}`"),
                None => String::new(),
            };
            return Err(Error::Container {
                reason: "ErrImagePull",
                message: format!(
                    "image {image:?} maps to {}, which does not exist{hint}",
                    binary.display()
                ),
            });
        }
        let entrypoint = entry.entrypoint.clone().unwrap_or_else(|| {
            binary
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        Ok(Image { binary, entrypoint })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(text: &str, root: &Path) -> Images {
        Images::parse(text, Path::new("images.toml"), root).unwrap()
    }

    #[test]
    fn resolves_relative_binaries_against_the_root() {
        let root = std::env::temp_dir();
        let dir = root.join(format!("pod-runner-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server"), "").unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let images = images(
            &format!("[images.\"x/server:1\"]\nbinary = \"{name}/server\"\n"),
            &root,
        );
        let image = images.resolve("x/server:1").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(image.binary, dir.join("server"));
        assert_eq!(image.entrypoint, "server");
    }

    #[test]
    fn missing_mapping_or_binary_is_an_image_pull_error() {
        let images = images(
            "[images.\"x/gone:1\"]\nbinary = \"no/such/bin\"\nbuild = \"make it\"\n",
            Path::new("/nonexistent"),
        );
        for (image, hint) in [("x/other:1", "not mapped"), ("x/gone:1", "`make it`")] {
            match images.resolve(image) {
                Err(Error::Container { reason, message }) => {
                    assert_eq!(reason, "ErrImagePull");
                    assert!(message.contains(hint), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let result = Images::parse(
            "[images.a]\nbinary = \"b\"\nbinray = \"c\"\n",
            Path::new("f"),
            Path::new("/"),
        );
        assert!(matches!(result, Err(Error::ImagesFile { .. })));
    }
}
