//! POSIX path handling as Python's `PurePosixPath` does it, for graph node names.
//!
//! `a//b/./c` has the parts `a`, `b`, `c`; a leading `/` (or exactly two, `//`) is a part of
//! its own. Directory nodes are named by the normalised parent, so two spellings of one folder
//! are one node, exactly as in the reference.

/// Splits a path into its root (if any) and its normalised components.
fn parts(path: &str) -> (Option<&'static str>, Vec<&str>) {
    let root = if path.starts_with("//") && !path.starts_with("///") {
        Some("//")
    } else if path.starts_with('/') {
        Some("/")
    } else {
        None
    };
    let components = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    (root, components)
}

fn join(root: Option<&str>, components: &[&str]) -> String {
    match (root, components.is_empty()) {
        (None, true) => ".".to_owned(),
        (Some(root), _) => format!("{root}{}", components.join("/")),
        (None, false) => components.join("/"),
    }
}

/// The parent directory of a changed file, when the path has more than one part
/// (`PurePosixPath(*parts[:-1])` in the reference); `None` for a file at the root.
pub fn directory_of(path: &str) -> Option<String> {
    let (root, components) = parts(path);
    let part_count = components.len() + usize::from(root.is_some());
    if part_count <= 1 {
        return None;
    }
    Some(join(root, &components[..components.len() - 1]))
}

/// `PurePosixPath(path).parent`: `.` for a bare name, the root for a root.
pub fn parent_of(path: &str) -> String {
    let (root, components) = parts(path);
    match components.split_last() {
        Some((_, init)) => join(root, init),
        None => join(root, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_follow_pure_posix_path() {
        assert_eq!(
            directory_of("src/auth/login.py").as_deref(),
            Some("src/auth")
        );
        assert_eq!(
            directory_of("src//auth/./login.py").as_deref(),
            Some("src/auth")
        );
        assert_eq!(directory_of("Makefile"), None);
        assert_eq!(directory_of("/etc/hosts").as_deref(), Some("/etc"));
        assert_eq!(directory_of("/hosts").as_deref(), Some("/"));
        assert_eq!(directory_of(""), None);
    }

    #[test]
    fn parents_follow_pure_posix_path() {
        assert_eq!(parent_of("Makefile"), ".");
        assert_eq!(parent_of("src/a.py"), "src");
        assert_eq!(parent_of("/"), "/");
        assert_eq!(parent_of(""), ".");
    }
}
