//! The censored-data estimators of `vestige::analysis` against reference numbers from
//! `lifelines` 0.30, `statsmodels` and `scipy`, made by `scripts/fixtures/make_survival_fixtures.py`
//! on the small data sets stored with them in `tests/fixtures/survival/`.
//!
//! Tolerances, and why (each 30–100× the largest difference measured when they were set):
//! - Kaplan–Meier survival, and the median with its interval: exact up to rounding (1e-12);
//!   they are products of fractions and times taken from the data.
//! - The log-log band: 1e-11 absolute. Both sides use the same formula; only the normal
//!   quantile comes from different libraries (statrs vs scipy).
//! - Maximum-likelihood fits (log-normal, Tobit = `LogNormalAFTFitter`): estimates 1e-7 relative
//!   (on the SE's scale for intercepts), standard errors 1e-6 relative, log-likelihood 1e-9
//!   relative. The script tightens `lifelines`' optimiser tolerances (its defaults stop ~1e-5
//!   short of the maximum), and our Newton fit converges to ~1e-8 standard errors; what is left
//!   is the two optimisers' stopping points (measured: ≤ 4e-9 on estimates, ≤ 1e-8 on SEs).
//! - t-intervals and OLS against scipy / statsmodels: 1e-9 relative (closed forms; the t
//!   quantile differs between statrs and scipy by ~1e-12). The log-normal MLE's interval
//!   without censoring equals the t-interval to 1e-6 relative (bounded by the ML fit's
//!   convergence, not by the formula).

use serde_json::Value;
use vestige::analysis::{kaplan_meier, log_t_interval, loglog_fit, lognormal_fit, tobit, Design, Observation};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/survival/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// A number, or `"inf"` (JSON has no infinity).
fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "inf" => f64::INFINITY,
        _ => v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")),
    }
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(num).collect()
}

fn flags(v: &Value) -> Vec<bool> {
    v.as_array().unwrap().iter().map(|b| b.as_bool().unwrap()).collect()
}

fn observations(values: &[f64], censored: &[bool]) -> Vec<Observation> {
    values.iter().zip(censored).map(|(&v, &c)| Observation { value: v, censored: c }).collect()
}

/// Asserts `|got − want| ≤ tol` (infinities must match exactly).
fn close(what: &str, got: f64, want: f64, tol: f64) {
    if want.is_infinite() || got.is_infinite() {
        assert_eq!(got, want, "{what}");
        return;
    }
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want} (diff {:e}, tol {tol:e})", got - want);
}

/// Asserts `|got − want| ≤ rel·|want|`.
fn rel_close(what: &str, got: f64, want: f64, rel: f64) {
    close(what, got, want, rel * want.abs());
}

#[test]
fn kaplan_meier_curve_band_and_median_match_lifelines() {
    for set in load("univariate.json")["sets"].as_array().unwrap() {
        let name = set["name"].as_str().unwrap();
        let obs = observations(&nums(&set["times"]), &flags(&set["censored"]));
        let km = kaplan_meier(&obs, 0.95).unwrap();
        let want = set["km_steps"].as_array().unwrap();
        assert_eq!(km.steps.len(), want.len(), "{name}: distinct times");
        for (got, w) in km.steps.iter().zip(want) {
            let at = format!("{name} t={}", got.time);
            close(&format!("{at} time"), got.time, num(&w["time"]), 0.0);
            close(&format!("{at} survival"), got.survival, num(&w["survival"]), 1e-12);
            close(&format!("{at} band lo"), got.lo, num(&w["lo"]), 1e-11);
            close(&format!("{at} band hi"), got.hi, num(&w["hi"]), 1e-11);
        }
        let m = km.median();
        close(&format!("{name} median"), m.value, num(&set["km_median"]), 1e-12);
        close(&format!("{name} median lo"), m.lo, num(&set["km_median_lo"]), 1e-12);
        close(&format!("{name} median hi"), m.hi, num(&set["km_median_hi"]), 1e-12);
    }
}

#[test]
fn lognormal_fit_matches_lifelines_and_reduces_to_the_t_interval_without_censoring() {
    for set in load("univariate.json")["sets"].as_array().unwrap() {
        let name = set["name"].as_str().unwrap();
        let times = nums(&set["times"]);
        let censored = flags(&set["censored"]);
        let fit = lognormal_fit(&observations(&times, &censored)).unwrap();
        rel_close(&format!("{name} mu"), fit.mu, num(&set["lognormal_mu"]), 1e-7);
        rel_close(&format!("{name} sigma"), fit.sigma, num(&set["lognormal_sigma"]), 1e-7);
        rel_close(&format!("{name} se(mu)"), fit.observed_se_mu, num(&set["lognormal_se_mu"]), 1e-6);
        // lifelines' likelihood is of t, ours of ln t: they differ by the Jacobian Σ_events ln t.
        let jacobian: f64 = times.iter().zip(&censored).filter(|(_, &c)| !c).map(|(t, _)| t.ln()).sum();
        let want_ll = num(&set["lognormal_log_likelihood_time_scale"]) + jacobian;
        close(&format!("{name} log-likelihood"), fit.log_likelihood, want_ll, 1e-9 * want_ll.abs());
        if let Some(ci) = set.get("log_t_interval_95") {
            let (lo, hi) = (num(&ci[0]), num(&ci[1]));
            let t = log_t_interval(&times, 0.95).unwrap();
            rel_close(&format!("{name} log-t lo"), t.lo.ln(), lo, 1e-9);
            rel_close(&format!("{name} log-t hi"), t.hi.ln(), hi, 1e-9);
            let mle = fit.log_median(0.95).unwrap();
            rel_close(&format!("{name} MLE lo"), mle.lo, lo, 1e-6);
            rel_close(&format!("{name} MLE hi"), mle.hi, hi, 1e-6);
        }
    }
}

#[test]
fn tobit_regression_matches_lifelines_lognormal_aft() {
    for set in load("regression.json")["sets"].as_array().unwrap() {
        let name = set["name"].as_str().unwrap();
        let y = nums(&set["ln_time"]);
        let mut design = Design::new(y.len());
        for col in set["numeric"].as_array().unwrap() {
            design = design.numeric(col["name"].as_str().unwrap(), &nums(&col["values"])).unwrap();
        }
        for factor in set["factors"].as_array().unwrap() {
            let levels: Vec<&str> = factor["levels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
            design = design.factor(factor["name"].as_str().unwrap(), &levels).unwrap();
        }
        let fit = tobit(&design, &observations(&y, &flags(&set["censored"]))).unwrap();
        assert_eq!(fit.censored as u64, set["n_censored"].as_u64().unwrap());
        let want = set["coefficients"].as_array().unwrap();
        assert_eq!(fit.coefficients.len(), want.len(), "{name}: coefficients");
        for (got, w) in fit.coefficients.iter().zip(want) {
            assert_eq!(got.name, w["name"].as_str().unwrap(), "{name}");
            // Intercepts sit far from 0 (ln params ≈ 12–16), so compare on the SE's scale.
            let se = num(&w["se"]);
            close(
                &format!("{name} {}", got.name),
                got.estimate,
                num(&w["estimate"]),
                1e-7 * se.max(num(&w["estimate"]).abs()),
            );
            rel_close(&format!("{name} se({})", got.name), got.observed_se, se, 1e-6);
        }
        close(&format!("{name} ln sigma"), fit.sigma.ln(), num(&set["ln_sigma"]), 1e-7);
        rel_close(&format!("{name} se(ln sigma)"), fit.observed_se_ln_sigma, num(&set["se_ln_sigma"]), 1e-6);
    }
}

#[test]
fn loglog_slope_interval_matches_statsmodels_ols() {
    let set = load("ols.json");
    let fit = loglog_fit(&nums(&set["x"]), &nums(&set["y"])).unwrap();
    rel_close("slope", fit.slope, num(&set["slope"]), 1e-9);
    rel_close("intercept", fit.intercept, num(&set["intercept"]), 1e-9);
    rel_close("slope lo", fit.slope_ci.0, num(&set["slope_ci_95"][0]), 1e-9);
    rel_close("slope hi", fit.slope_ci.1, num(&set["slope_ci_95"][1]), 1e-9);
    rel_close("r2", fit.r2, num(&set["r2"]), 1e-9);
}
