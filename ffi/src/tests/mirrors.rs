//! The C enums mirror the core's and the client's vocabularies: these fail when one side
//! gains a value the other does not have.

use imds_cache::FailureKind;
use imds_cache_client::Error;

use crate::result::from_error;
use crate::{imds_cache_failure, imds_cache_result};

#[test]
fn every_failure_kind_has_its_own_c_number() {
    for &kind in FailureKind::ALL {
        let c = imds_cache_failure::from_core(kind);
        assert_ne!(c, imds_cache_failure::Other, "{kind:?} has no C value");
        assert_eq!(
            c as u32, kind as u32,
            "{kind:?}: the numbers are the core's"
        );
        assert_eq!(imds_cache_failure::to_core(c as u32), Some(kind));
    }
    assert_eq!(
        imds_cache_failure::to_core(imds_cache_failure::Other as u32),
        None
    );
}

#[test]
fn every_driver_error_code_has_its_own_result() {
    let every = Error::examples();
    let codes: Vec<&str> = every.iter().map(Error::code).collect();
    assert_eq!(codes, Error::CODES, "a new driver error needs its C result");
    let results: Vec<imds_cache_result> = every.into_iter().map(from_error).collect();
    for (i, r) in results.iter().enumerate() {
        assert_ne!(
            *r,
            imds_cache_result::Failed,
            "{} has no result of its own",
            codes[i]
        );
        assert_eq!(results.iter().filter(|x| *x == r).count(), 1, "{r:?} twice");
    }
}

#[test]
fn the_c_stats_struct_has_every_counter_in_order() {
    let mut core = imds_cache::Stats::default();
    let names: Vec<&str> = core.fields().iter().map(|(n, _)| *n).collect();
    core.hits = 1;
    core.lease_lapses = 13;
    let c = crate::imds_cache_stats::from(core);
    assert_eq!((c.hits, c.lease_lapses), (1, 13));
    let shown = format!("{c:?}");
    let fields: Vec<&str> = shown
        .trim_start_matches("imds_cache_stats { ")
        .trim_end_matches(" }")
        .split(", ")
        .map(|f| f.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        fields, names,
        "imds_cache_stats mirrors Stats::fields, in order"
    );
}
