//! Arbitrary bytes, read as UTF-8 (lossily), given to `paging::decode` as a
//! listing's `page_token`. It must answer, never panic; and whatever position it
//! accepts must survive `encode` and `decode` unchanged, so a page token built from
//! an accepted position leads back to the same place.
#![no_main]

use authd::domain::paging;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    if let Ok(Some((created_at, id))) = paging::decode(&token) {
        let reencoded = paging::encode(created_at, &id);
        match paging::decode(&reencoded) {
            Ok(Some((c, i))) if c == created_at && i == id => {}
            other => panic!(
                "{token:?} decoded to ({created_at}, {id:?}), whose encoding {reencoded:?} \
                 decodes to {other:?}"
            ),
        }
    }
});
