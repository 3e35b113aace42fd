//! Random-looking provider answer ids, shared by the bench binaries.

/// A fresh id for the n-th answer: `chatcmpl-` and 29 base-62 digits of a mix of `n`
/// (splitmix64), so ids are unique and spread over the key space like random ones.
pub fn fresh_id(n: u64) -> [u8; 38] {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = [0u8; 38];
    id[..9].copy_from_slice(b"chatcmpl-");
    let mut x = n;
    let mut state = 0u64;
    for slot in id[9..].iter_mut() {
        if state < 62 {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            state = z ^ (z >> 31);
        }
        *slot = DIGITS[(state % 62) as usize];
        state /= 62;
    }
    id
}
