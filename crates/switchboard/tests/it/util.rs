/// A fresh durable embedded bus in its own directory.
pub(crate) async fn bus() -> (switchboard::Bus, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus =
        switchboard::Bus::connect(&format!("embedded:{}", dir.path().display())).await.expect("connect");
    (bus, dir)
}
