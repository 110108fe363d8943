//! The analysis module (`vestige::analysis`): decay-law fits and AIC selection, half-lives,
//! bootstrap CIs over seeds, log-log scaling fits, and their input errors.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vestige::analysis::{
    best, bootstrap, bootstrap_mean, bootstrap_over, fit_all, fit_half_life, fit_law, fit_law_weighted, linear_fit,
    loglog_fit, observed_half_life, student_t_quantile, AnalysisError, BootstrapConfig, Curve, Decay, Estimate,
    HalfLife, Law,
};

/// `t = 0` (end of phase 1) then 14 log-spaced steps from 1 to 10 000: 15 points.
fn log_times() -> Vec<f64> {
    std::iter::once(0.0).chain((0..14).map(|i| 10f64.powf(4.0 * i as f64 / 13.0))).collect()
}

/// `n` deterministic noise values, uniform in `[-half_width, half_width]`.
fn noise(seed: u64, n: usize, half_width: f64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-half_width..half_width)).collect()
}

/// Falling accuracy, 0.9 → 0.1, e-folding time 300 steps.
fn exponential() -> Curve {
    Curve { c: 0.1, a: 0.8, decay: Decay::Exponential { tau: 300.0 } }
}

/// Falling accuracy, 0.95 → 0.05, slow power-law tail.
fn power_law() -> Curve {
    Curve { c: 0.05, a: 0.9, decay: Decay::PowerLaw { b: 0.4 } }
}

/// Falling accuracy from 0.9 with a plateau of ~40 steps, then a steep power law to 0.1.
fn shifted_power_law() -> Curve {
    let (b, s): (f64, f64) = (1.5, 40.0);
    Curve { c: 0.1, a: 0.8 * s.powf(b), decay: Decay::ShiftedPowerLaw { b, s } }
}

/// `(law, generating curve)` for each law.
fn generators() -> [(Law, Curve); 3] {
    [(Law::Exponential, exponential()), (Law::PowerLaw, power_law()), (Law::ShiftedPowerLaw, shifted_power_law())]
}

/// The curve sampled at `t`, plus `noise` point by point.
fn sample(curve: &Curve, t: &[f64], noise: &[f64]) -> Vec<f64> {
    t.iter().zip(noise).map(|(&ti, e)| curve.predict(ti) + e).collect()
}

/// Asserts every named parameter of `got` is within relative `tol` of `want`'s.
fn assert_params_close(got: &Curve, want: &Curve, tol: f64) {
    assert_eq!(got.law(), want.law());
    for ((name, g), (_, w)) in got.params().into_iter().zip(want.params()) {
        assert!(((g - w) / w).abs() < tol, "{:?} {name}: got {g}, want {w} (tol {tol})\n{got:?}", want.law());
    }
}

/// The identifiable summary of a curve: asymptote, total movement `y(0) − c`, shape parameters.
/// (For the shifted power law `a` itself is poorly determined by noisy data: only `a·s^(−b)` is.)
fn identifiable(curve: &Curve) -> Vec<(&'static str, f64)> {
    let mut named = curve.params();
    named[1] = ("movement", curve.predict(0.0) - curve.c);
    named
}

// ---------------------------------------------------------------------------------------------
// Decay-law fits

#[test]
fn noiseless_curves_recover_each_laws_parameters_tightly() {
    let t = log_times();
    for (law, curve) in generators() {
        let fit = fit_law(law, &t, &sample(&curve, &t, &[0.0; 15])).unwrap();
        assert_params_close(&fit.curve, &curve, 1e-6);
        assert_eq!(fit.n, 15);
    }
}

#[test]
fn noisy_curves_recover_each_laws_parameters_loosely() {
    let t = log_times();
    for (seed, (law, curve)) in generators().into_iter().enumerate() {
        let y = sample(&curve, &t, &noise(seed as u64, t.len(), 0.01));
        let fit = fit_law(law, &t, &y).unwrap();
        for ((name, g), (_, w)) in identifiable(&fit.curve).into_iter().zip(identifiable(&curve)) {
            assert!(((g - w) / w).abs() < 0.2, "{law:?} {name}: got {g}, want {w}\n{fit:?}");
        }
        assert!(fit.r2 > 0.99 && fit.r2 < 1.0, "{law:?}: R² = {}", fit.r2);
    }
}

#[test]
fn aicc_selects_the_generating_law_on_most_noisy_realizations() {
    // The power law is the shifted one at s = 1, so on power-law data the shifted law always
    // fits a little better and the ranking picks the power law only when the gain is small
    // (AIC's 2-per-parameter penalty alone: about 84 % of the time, the χ²₁ < 2 probability;
    // AICc's small-sample term penalises the extra parameter more). Hence a majority of 20,
    // not every realization; the other two laws are separable and must win every time.
    let t = log_times();
    for (law, curve, min_wins) in [
        (Law::Exponential, exponential(), 20),
        (Law::PowerLaw, power_law(), 14),
        (Law::ShiftedPowerLaw, shifted_power_law(), 20),
    ] {
        let winners: Vec<Law> = (0..20)
            .map(|seed| best(&fit_all(&t, &sample(&curve, &t, &noise(seed, t.len(), 0.01))).unwrap()).unwrap().law())
            .collect();
        let wins = winners.iter().filter(|&&w| w == law).count();
        assert!(wins >= min_wins, "{law:?} won {wins} of 20: {winners:?}");
    }
}

#[test]
fn fit_all_is_sorted_by_aicc_with_best_first() {
    let t = log_times();
    let fits = fit_all(&t, &sample(&power_law(), &t, &noise(3, t.len(), 0.01))).unwrap();
    assert_eq!(fits.len(), 3);
    assert!(fits.windows(2).all(|w| w[0].aicc <= w[1].aicc), "{fits:?}");
    assert_eq!(best(&fits), fits.first());
    assert_eq!(best(&[]), None);
}

#[test]
fn aicc_adds_the_small_sample_penalty_that_grows_with_the_parameters() {
    // With K = k + 1 (the noise variance counted): 2K(K+1)/(n − K − 1).
    let t = log_times();
    let n = t.len() as f64;
    for fit in fit_all(&t, &sample(&power_law(), &t, &noise(5, t.len(), 0.01))).unwrap() {
        let big_k = fit.law().n_params() as f64 + 1.0;
        let want = 2.0 * big_k * (big_k + 1.0) / (n - big_k - 1.0);
        assert!((fit.aicc - fit.aic - want).abs() < 1e-9, "{:?}: {} vs {}", fit.law(), fit.aicc - fit.aic, want);
    }
    // Too few points for the four-parameter law: it cannot be ranked.
    let short = &t[..6];
    let fits = fit_all(short, &sample(&shifted_power_law(), short, &noise(5, 6, 0.01))).unwrap();
    let shifted = fits.iter().find(|f| f.law() == Law::ShiftedPowerLaw).unwrap();
    assert!(shifted.aicc.is_infinite() && fits.last().unwrap().law() == Law::ShiftedPowerLaw, "{fits:?}");
}

#[test]
fn fit_all_skips_laws_with_as_many_parameters_as_points() {
    let t = [0.0, 10.0, 100.0, 1000.0];
    let fits = fit_all(&t, &sample(&exponential(), &t, &[0.0; 4])).unwrap();
    let laws: Vec<Law> = fits.iter().map(|f| f.law()).collect();
    assert!(!laws.contains(&Law::ShiftedPowerLaw) && laws.len() == 2, "{laws:?}");
}

#[test]
fn r2_is_one_on_noiseless_data() {
    let t = log_times();
    for (law, curve) in generators() {
        let fit = fit_law(law, &t, &sample(&curve, &t, &[0.0; 15])).unwrap();
        assert!((fit.r2 - 1.0).abs() < 1e-10, "{law:?}: R² = {}", fit.r2);
        assert!(fit.aic.is_finite(), "{law:?}: AIC = {}", fit.aic);
    }
}

#[test]
fn constant_data_gives_r2_one_a_flat_fit_and_finite_aic() {
    let t = log_times();
    let y = vec![0.25; t.len()];
    for fit in fit_all(&t, &y).unwrap() {
        assert_eq!(fit.r2, 1.0, "{fit:?}");
        assert!(fit.aic.is_finite(), "{fit:?}");
        for &ti in &t {
            assert!((fit.curve.predict(ti) - 0.25).abs() < 1e-12, "{fit:?} at t = {ti}");
        }
    }
    assert_eq!(fit_all(&t, &y).unwrap()[0].law(), Law::Exponential, "ties go to the fewest parameters");
}

#[test]
fn rising_loss_is_fitted_with_a_negative_amplitude() {
    let t = log_times();
    let loss = Curve { c: 3.0, a: -1.5, decay: Decay::Exponential { tau: 120.0 } };
    let fit = fit_law(Law::Exponential, &t, &sample(&loss, &t, &noise(7, t.len(), 0.01))).unwrap();
    assert!(fit.curve.a < 0.0, "{fit:?}");
    assert_params_close(&fit.curve, &loss, 0.1);
}

#[test]
fn weighted_fit_discounts_a_downweighted_outlier() {
    let t = log_times();
    let mut y = sample(&exponential(), &t, &[0.0; 15]);
    y[7] += 0.3;
    let mut w = vec![1.0; t.len()];
    w[7] = 1e-12;
    let weighted = fit_law_weighted(Law::Exponential, &t, &y, &w).unwrap();
    let unweighted = fit_law(Law::Exponential, &t, &y).unwrap();
    assert_params_close(&weighted.curve, &exponential(), 1e-4);
    let Decay::Exponential { tau } = unweighted.curve.decay else { unreachable!() };
    assert!((tau - 300.0).abs() > 1.0, "the outlier should move the unweighted fit: tau = {tau}");
}

#[test]
fn time_to_reach_inverts_predict_for_each_law() {
    for (law, curve) in generators() {
        for t in [0.0, 3.0, 250.0, 5000.0] {
            let back = curve.time_to_reach(curve.predict(t)).unwrap();
            assert!((back - t).abs() < 1e-6 * (1.0 + t), "{law:?}: t = {t}, inverted to {back}");
        }
    }
}

#[test]
fn time_to_reach_is_none_at_or_beyond_the_asymptote_or_before_the_start() {
    for (law, curve) in generators() {
        assert_eq!(curve.time_to_reach(curve.c), None, "{law:?}: the asymptote");
        assert_eq!(curve.time_to_reach(curve.c - 0.01), None, "{law:?}: beyond the asymptote");
        assert_eq!(curve.time_to_reach(curve.predict(0.0) + 0.01), None, "{law:?}: before the start");
    }
}

// ---------------------------------------------------------------------------------------------
// Half-lives

#[test]
fn exponential_fit_half_life_to_floor_is_tau_ln2() {
    let t = log_times();
    let curve = exponential();
    let fit = fit_law(Law::Exponential, &t, &sample(&curve, &t, &[0.0; 15])).unwrap();
    let half_life = fit_half_life(&fit, curve.c + curve.a, curve.c).unwrap().unwrap();
    assert!((half_life - 300.0 * 2f64.ln()).abs() < 1e-4, "{half_life}");
}

#[test]
fn shifted_power_law_fit_half_life_matches_the_analytic_value() {
    let t = log_times();
    let curve = shifted_power_law();
    let Decay::ShiftedPowerLaw { b, s } = curve.decay else { unreachable!() };
    let fit = fit_law(Law::ShiftedPowerLaw, &t, &sample(&curve, &t, &[0.0; 15])).unwrap();
    // (t + s)^(−b) = s^(−b) / 2  ⇔  t = s·(2^(1/b) − 1).
    let analytic = s * (2f64.powf(1.0 / b) - 1.0);
    let half_life = fit_half_life(&fit, curve.predict(0.0), curve.c).unwrap().unwrap();
    assert!((half_life - analytic).abs() < 1e-4 * analytic, "{half_life} vs {analytic}");
}

#[test]
fn fit_half_life_is_none_when_the_asymptote_stops_short_of_halfway() {
    let t = log_times();
    let fit = fit_law(Law::Exponential, &t, &sample(&exponential(), &t, &[0.0; 15])).unwrap();
    // Start 0.9, floor −1.0: halfway is −0.05, below the asymptote 0.1.
    assert_eq!(fit_half_life(&fit, 0.9, -1.0).unwrap(), None);
}

#[test]
fn observed_half_life_interpolates_linearly_at_the_first_crossing() {
    let t = [0.0, 10.0, 20.0, 40.0, 80.0];
    let y = [1.0, 0.9, 0.7, 0.4, 0.45];
    // start 1.0, floor 0.2: halfway 0.6, crossed between (20, 0.7) and (40, 0.4) at 20 + 20/3.
    let HalfLife::Reached(got) = observed_half_life(&t, &y, 1.0, 0.2).unwrap() else { panic!("censored") };
    assert!((got - (20.0 + 20.0 / 3.0)).abs() < 1e-12, "{got}");
}

#[test]
fn observed_half_life_interpolates_from_the_start_value_at_t_zero_when_t_zero_is_missing() {
    let got = observed_half_life(&[10.0, 20.0], &[0.4, 0.3], 1.0, 0.0).unwrap();
    assert_eq!(got, HalfLife::Reached(10.0 * 0.5 / 0.6));
}

#[test]
fn observed_half_life_is_censored_when_the_curve_never_crosses() {
    let t = [0.0, 10.0, 100.0, 1000.0];
    let got = observed_half_life(&t, &[0.9, 0.85, 0.7, 0.6], 0.9, 0.1).unwrap();
    assert_eq!(got, HalfLife::Censored { horizon: 1000.0 });
}

#[test]
fn observed_half_life_works_for_a_rising_loss() {
    let t = [0.0, 100.0, 200.0];
    // Loss from 1.0 towards a floor (chance) of 5.0: halfway is 3.0.
    let got = observed_half_life(&t, &[1.0, 2.0, 4.0], 1.0, 5.0).unwrap();
    assert_eq!(got, HalfLife::Reached(150.0));
    let censored = observed_half_life(&t, &[1.0, 0.5, 0.2], 1.0, 5.0).unwrap();
    assert_eq!(censored, HalfLife::Censored { horizon: 200.0 }, "falling loss never moves towards the floor");
}

#[test]
fn rising_loss_fit_half_life_is_tau_ln2() {
    let t = log_times();
    let loss = Curve { c: 3.0, a: -1.5, decay: Decay::Exponential { tau: 120.0 } };
    let fit = fit_law(Law::Exponential, &t, &sample(&loss, &t, &[0.0; 15])).unwrap();
    let half_life = fit_half_life(&fit, 1.5, 3.0).unwrap().unwrap();
    assert!((half_life - 120.0 * 2f64.ln()).abs() < 1e-4, "{half_life}");
}

#[test]
fn half_life_rejects_start_equal_to_floor_and_unsorted_times() {
    let err = observed_half_life(&[0.0, 1.0], &[1.0, 0.5], 0.3, 0.3).unwrap_err();
    assert!(matches!(err, AnalysisError::InvalidArgument { name: "floor", .. }), "{err}");
    let err = observed_half_life(&[0.0, 5.0, 5.0], &[1.0, 0.9, 0.8], 1.0, 0.0).unwrap_err();
    assert_eq!(err, AnalysisError::NotIncreasing { index: 2, value: 5.0 });
}

// ---------------------------------------------------------------------------------------------
// Bootstrap

/// 95 % level, 2000 resamples, seed `seed`.
fn config(seed: u64) -> BootstrapConfig {
    BootstrapConfig { n_resamples: 2000, level: 0.95, seed }
}

/// Width of an interval.
fn width(e: &Estimate) -> f64 {
    e.hi - e.lo
}

#[test]
fn bootstrap_is_deterministic_for_a_fixed_seed_and_varies_with_the_seed() {
    let values = noise(1, 8, 1.0);
    let a = bootstrap_mean(&values, &config(42)).unwrap();
    assert_eq!(a, bootstrap_mean(&values, &config(42)).unwrap());
    assert_ne!(a, bootstrap_mean(&values, &config(43)).unwrap());
}

#[test]
fn bootstrap_ci_contains_the_sample_mean() {
    for seed in 0..5 {
        let values = noise(seed, 6, 1.0);
        let e = bootstrap_mean(&values, &config(seed)).unwrap();
        let mean = values.iter().sum::<f64>() / 6.0;
        assert_eq!(e.value, mean);
        assert!(e.lo < mean && mean < e.hi && e.n == 6 && e.resamples == 2000, "{e:?}");
    }
}

#[test]
fn bootstrap_ci_shrinks_with_more_seeds() {
    let few = bootstrap_mean(&noise(5, 5, 1.0), &config(0)).unwrap();
    let many = bootstrap_mean(&noise(5, 80, 1.0), &config(0)).unwrap();
    // The width scales like 1/√n: 4× narrower for 16× the seeds, so at least 2× is safe.
    assert!(width(&many) < width(&few) / 2.0, "few: {few:?}, many: {many:?}");
}

#[test]
fn bootstrap_of_equal_values_has_a_zero_width_interval() {
    let e = bootstrap_mean(&[0.7; 5], &config(0)).unwrap();
    assert_eq!(e.lo, e.hi);
    assert_eq!(e.lo, e.value);
    assert!((e.value - 0.7).abs() < 1e-15);
}

#[test]
fn bootstrap_with_a_custom_statistic_uses_it() {
    let values = [1.0, 2.0, 3.0, 100.0];
    let max = bootstrap(&values, |xs| xs.iter().copied().fold(f64::MIN, f64::max), &config(0)).unwrap();
    assert_eq!((max.value, max.hi), (100.0, 100.0));
    assert!(max.lo < 100.0, "some resamples miss the 100: {max:?}");
}

#[test]
fn bootstrap_over_seed_curves_gives_an_interval_as_wide_as_the_seed_spread_implies() {
    let t = log_times();
    let seeds: Vec<Vec<f64>> = (0..8).map(|s| sample(&exponential(), &t, &noise(100 + s, t.len(), 0.03))).collect();
    let tau_of = |curve: &[f64]| match fit_law(Law::Exponential, &t, curve).ok()?.curve.decay {
        Decay::Exponential { tau } => Some(tau),
        _ => None,
    };
    let tau_of_mean_curve = |curves: &[&Vec<f64>]| {
        let m = curves.len() as f64;
        tau_of(&(0..t.len()).map(|i| curves.iter().map(|c| c[i]).sum::<f64>() / m).collect::<Vec<f64>>())
    };
    let e = bootstrap_over(&seeds, tau_of_mean_curve, &BootstrapConfig { n_resamples: 300, ..config(9) }).unwrap();
    assert!(e.lo < e.value && e.value < e.hi && (e.value - 300.0).abs() < 15.0, "{e:?}");
    // Independent yardstick: the standard error of the mean of per-seed τ, times 2·1.96.
    let taus: Vec<f64> = seeds.iter().map(|c| tau_of(c).unwrap()).collect();
    let mean = taus.iter().sum::<f64>() / 8.0;
    let se = (taus.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 7.0 / 8.0).sqrt();
    assert!(width(&e) > 3.92 * se / 3.0 && width(&e) < 3.92 * se * 3.0, "{e:?} vs se {se}");
}

#[test]
fn bootstrap_over_skips_resamples_where_the_statistic_is_undefined() {
    let items = [1.0, 2.0, 3.0];
    let without_first = |xs: &[&f64]| (!xs.iter().any(|&&x| x == 1.0)).then_some(0.0);
    let all_sample = |xs: &[&f64]| if xs.len() == 3 && xs.iter().any(|&&x| x == 1.0) { Some(1.0) } else { None };
    let err = bootstrap_over(&items, without_first, &config(0)).unwrap_err();
    assert_eq!(err, AnalysisError::StatisticUndefined { n: 3 }, "undefined on the full sample");
    let e = bootstrap_over(&items, all_sample, &config(0)).unwrap();
    // A resample misses item 0 with probability (2/3)³ ≈ 0.30.
    assert!(e.resamples > 1200 && e.resamples < 1600, "{e:?}");
}

#[test]
fn bootstrap_rejects_empty_input_a_bad_level_and_zero_resamples() {
    assert!(matches!(bootstrap_mean(&[], &config(0)), Err(AnalysisError::TooFewPoints { got: 0, .. })));
    let bad_level = BootstrapConfig { level: 1.0, ..config(0) };
    assert!(matches!(bootstrap_mean(&[1.0], &bad_level), Err(AnalysisError::InvalidArgument { name: "level", .. })));
    let none = BootstrapConfig { n_resamples: 0, ..config(0) };
    assert!(matches!(bootstrap_mean(&[1.0], &none), Err(AnalysisError::InvalidArgument { name: "n_resamples", .. })));
    assert!(matches!(bootstrap_mean(&[f64::NAN], &config(0)), Err(AnalysisError::NonFinite { .. })));
}

// ---------------------------------------------------------------------------------------------
// Scaling fits

#[test]
fn student_t_quantiles_match_table_values() {
    for (p, dof, want) in [
        (0.975, 1.0, 12.706),
        (0.975, 2.0, 4.303),
        (0.975, 5.0, 2.571),
        (0.975, 10.0, 2.228),
        (0.975, 30.0, 2.042),
        (0.95, 10.0, 1.812),
        (0.995, 3.0, 5.841),
        (0.975, 1e7, 1.960),
    ] {
        let got = student_t_quantile(p, dof);
        assert!((got - want).abs() < 6e-4, "t({p}, {dof}) = {got}, table {want}");
        assert_eq!(student_t_quantile(1.0 - p, dof), -got, "symmetry at p = {p}, dof = {dof}");
    }
    for p in [0.6, 0.9, 0.999] {
        let cauchy = (std::f64::consts::PI * (p - 0.5)).tan();
        assert!((student_t_quantile(p, 1.0) - cauchy).abs() < 1e-9 * cauchy, "p = {p}");
    }
    assert!(student_t_quantile(1.0, 3.0).is_nan() && student_t_quantile(0.5, 0.0).is_nan());
}

#[test]
fn loglog_slope_recovers_a_known_exponent_with_a_ci_of_the_right_width() {
    let x: Vec<f64> = (0..10).map(|i| 1e6 * 2f64.powi(i)).collect();
    let h = 0.05;
    let y: Vec<f64> = x.iter().zip(noise(21, 10, h)).map(|(xi, e)| 3.0 * xi.powf(-0.7) * e.exp()).collect();
    let fit = loglog_fit(&x, &y).unwrap();
    assert!((fit.slope + 0.7).abs() < 0.05, "{fit:?}");
    assert!(fit.slope_ci.0 < -0.7 && -0.7 < fit.slope_ci.1, "{fit:?}");
    assert!((fit.intercept - 3f64.ln()).abs() < 1.0, "{fit:?}");
    // Expected half-width: t_{0.975,8}·σ/√Sxx with σ = h/√3 (uniform noise in ln y).
    let ln_x: Vec<f64> = x.iter().map(|v| v.ln()).collect();
    let mean = ln_x.iter().sum::<f64>() / 10.0;
    let sxx: f64 = ln_x.iter().map(|v| (v - mean).powi(2)).sum();
    let expected = student_t_quantile(0.975, 8.0) * h / 3f64.sqrt() / sxx.sqrt();
    let half_width = (fit.slope_ci.1 - fit.slope_ci.0) / 2.0;
    assert!(half_width > expected / 3.0 && half_width < expected * 3.0, "{half_width} vs {expected}");
}

#[test]
fn linear_fit_of_an_exact_line_has_r2_one_and_a_zero_width_ci() {
    let fit = linear_fit(&[1.0, 2.0, 3.0, 4.0], &[3.0, 5.0, 7.0, 9.0]).unwrap();
    assert!((fit.slope - 2.0).abs() < 1e-12 && (fit.intercept - 1.0).abs() < 1e-12, "{fit:?}");
    assert!((fit.slope_ci.1 - fit.slope_ci.0).abs() < 1e-9 && (fit.r2 - 1.0).abs() < 1e-12, "{fit:?}");
    assert_eq!(fit.n, 4);
}

#[test]
fn linear_fit_ci_matches_a_hand_computed_interval() {
    // x = 0..4, y = [0, 2, 1, 3, 4]: slope 0.9, SSE = 1.9, Sxx = 10, dof 3, t_{0.975,3} = 3.18245.
    let fit = linear_fit(&[0.0, 1.0, 2.0, 3.0, 4.0], &[0.0, 2.0, 1.0, 3.0, 4.0]).unwrap();
    let half = 3.182_446_305_284_263 * (1.9 / 3.0 / 10.0f64).sqrt();
    assert!((fit.slope - 0.9).abs() < 1e-12, "{fit:?}");
    assert!((fit.slope_ci.0 - (0.9 - half)).abs() < 1e-9 && (fit.slope_ci.1 - (0.9 + half)).abs() < 1e-9, "{fit:?}");
}

// ---------------------------------------------------------------------------------------------
// Input errors

#[test]
fn fits_reject_too_few_points() {
    let t = [0.0, 1.0, 2.0];
    let err = fit_law(Law::Exponential, &t, &[1.0, 0.5, 0.3]).unwrap_err();
    assert!(matches!(err, AnalysisError::TooFewPoints { needed: 4, got: 3, .. }), "{err}");
    assert!(matches!(fit_all(&t, &[1.0, 0.5, 0.3]), Err(AnalysisError::TooFewPoints { needed: 4, got: 3, .. })));
    let err = fit_law(Law::ShiftedPowerLaw, &[0.0, 1.0, 2.0, 3.0], &[1.0, 0.5, 0.3, 0.2]).unwrap_err();
    assert!(matches!(err, AnalysisError::TooFewPoints { needed: 5, got: 4, .. }), "{err}");
    assert!(matches!(linear_fit(&[1.0, 2.0], &[1.0, 2.0]), Err(AnalysisError::TooFewPoints { needed: 3, .. })));
}

#[test]
fn fits_reject_nan_input() {
    let t = log_times();
    let mut y = sample(&exponential(), &t, &[0.0; 15]);
    y[4] = f64::NAN;
    let err = fit_all(&t, &y).unwrap_err();
    assert!(matches!(err, AnalysisError::NonFinite { what: "y", index: 4, .. }), "{err}");
    let err = observed_half_life(&t, &y, 0.9, 0.1).unwrap_err();
    assert!(matches!(err, AnalysisError::NonFinite { what: "y", index: 4, .. }), "{err}");
    assert!(matches!(linear_fit(&[1.0, f64::INFINITY, 3.0], &[1.0; 3]), Err(AnalysisError::NonFinite { .. })));
}

#[test]
fn fits_reject_mismatched_lengths_negative_times_and_bad_weights() {
    let err = fit_law(Law::PowerLaw, &[0.0, 1.0, 2.0, 3.0, 4.0], &[1.0; 4]).unwrap_err();
    assert!(matches!(err, AnalysisError::LengthMismatch { left: 5, right: 4, .. }), "{err}");
    let err = fit_law(Law::PowerLaw, &[0.0, -1.0, 2.0, 3.0, 4.0], &[1.0; 5]).unwrap_err();
    assert_eq!(err, AnalysisError::NegativeTime { index: 1, value: -1.0 });
    let err = fit_law_weighted(Law::PowerLaw, &[0.0, 1.0, 2.0, 3.0, 4.0], &[1.0; 5], &[1.0, 1.0, 0.0, 1.0, 1.0]);
    assert!(matches!(err, Err(AnalysisError::NonPositive { what: "w", index: 2, .. })));
}

#[test]
fn loglog_fit_rejects_non_positive_values() {
    let err = loglog_fit(&[1.0, 0.0, 3.0], &[1.0, 2.0, 3.0]).unwrap_err();
    assert!(matches!(err, AnalysisError::NonPositive { what: "x", index: 1, .. }), "{err}");
    let err = loglog_fit(&[1.0, 2.0, 3.0], &[1.0, 2.0, -3.0]).unwrap_err();
    assert!(matches!(err, AnalysisError::NonPositive { what: "y", index: 2, .. }), "{err}");
    assert!(err.to_string().contains("must be > 0"), "{err}");
}

#[test]
fn linear_fit_rejects_constant_x() {
    let err = linear_fit(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]).unwrap_err();
    assert_eq!(err, AnalysisError::ConstantX { n: 3, x: 2.0 });
}

#[test]
fn slope_only_agrees_with_linear_fit_and_works_from_two_points() {
    use vestige::analysis::scaling::{linear_fit, slope_only};
    let (x, y) = ([1.0, 2.0, 4.0, 7.0], [0.5, 1.9, 4.2, 6.1]);
    let fit = linear_fit(&x, &y).unwrap();
    assert!((slope_only(&x, &y).unwrap() - fit.slope).abs() < 1e-12);
    assert_eq!(slope_only(&[3.0, 4.0], &[1.0, 0.5]), Some(-0.5));
    assert_eq!(slope_only(&[2.0, 2.0], &[1.0, 5.0]), None);
    assert_eq!(slope_only(&[], &[]), None);
}
