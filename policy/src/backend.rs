//! Chooses iptables-nft or iptables-legacy like the host's other users (placeholder).
