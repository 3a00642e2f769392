fn main() {
    match sofort::crd::patch_policy_crd_yaml() {
        Ok(y) => print!("{y}"),
        Err(e) => eprintln!("{e}"),
    }
}
