//! `multinic-controller`: not implemented in this version (see the crate docs).

fn main() -> std::process::ExitCode {
    eprintln!("multinic-controller is not implemented in this version; create NicNodeBlocks by hand (see README)");
    std::process::ExitCode::FAILURE
}
