//! `tortie-cni`: the CNI plugin (CNI spec 1.0.0), a thin client of the
//! agent's socket. See `tortie::cni::plugin`.

fn main() {
    tortie::cni::plugin::main()
}
