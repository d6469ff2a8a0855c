//! ferroctl: placeholder until the control plane lands.
fn main() {}
