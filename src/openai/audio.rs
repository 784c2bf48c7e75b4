//! How many seconds an uploaded audio file holds, for audio-seconds limits (ASH, ASD).
//!
//! WAV files say it exactly in their header. Compressed formats would need decoding, so they are
//! estimated from their size at 128 kbit/s, a common rate for speech uploads; the provider's 429
//! corrects an account that was underestimated.

/// Bytes per second assumed for a compressed upload (128 kbit/s).
const COMPRESSED_BYTES_PER_SECOND: u64 = 16_000;

/// Seconds of audio in `file`, at least 1.
pub(super) fn seconds(file: &[u8]) -> u64 {
    wav_seconds(file)
        .unwrap_or_else(|| (file.len() as u64).div_ceil(COMPRESSED_BYTES_PER_SECOND))
        .max(1)
}

/// The duration a RIFF/WAVE header declares: the `data` chunk's size over the `fmt ` chunk's
/// byte rate.
fn wav_seconds(file: &[u8]) -> Option<u64> {
    if file.get(0..4)? != b"RIFF" || file.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut offset = 12;
    let mut byte_rate = None;
    while let Some(header) = file.get(offset..offset + 8) {
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let body = offset + 8;
        match &header[..4] {
            b"fmt " => {
                let rate = file.get(body + 8..body + 12)?;
                byte_rate =
                    Some(u64::from(u32::from_le_bytes([rate[0], rate[1], rate[2], rate[3]])));
            }
            b"data" => {
                let rate = byte_rate.filter(|r| *r > 0)?;
                return Some((size as u64).div_ceil(rate));
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        offset = body.checked_add(size + (size & 1))?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV header for `seconds` of 16 kHz mono 16-bit audio (32,000 bytes a second).
    fn wav(seconds: u32) -> Vec<u8> {
        let data = seconds * 32_000;
        let mut file = Vec::new();
        file.extend_from_slice(b"RIFF");
        file.extend_from_slice(&(36 + data).to_le_bytes());
        file.extend_from_slice(b"WAVEfmt ");
        file.extend_from_slice(&16u32.to_le_bytes());
        file.extend_from_slice(&1u16.to_le_bytes());
        file.extend_from_slice(&1u16.to_le_bytes());
        file.extend_from_slice(&16_000u32.to_le_bytes());
        file.extend_from_slice(&32_000u32.to_le_bytes());
        file.extend_from_slice(&2u16.to_le_bytes());
        file.extend_from_slice(&16u16.to_le_bytes());
        file.extend_from_slice(b"data");
        file.extend_from_slice(&data.to_le_bytes());
        file
    }

    #[test]
    fn a_wav_header_gives_the_exact_duration() {
        assert_eq!(seconds(&wav(42)), 42);
        // The header is enough: the samples themselves need not be uploaded yet.
        assert_eq!(wav_seconds(&wav(7)), Some(7));
    }

    #[test]
    fn other_files_are_estimated_from_their_size() {
        assert_eq!(seconds(&vec![0u8; 160_000]), 10);
        assert_eq!(seconds(b"ID3 tiny"), 1);
        assert_eq!(seconds(b"RIFF\0\0\0\0WAVEjunk"), 1, "a broken header falls back to the size");
    }
}
