"""The tools around runs: reproduce, report, resume, predict, bench, init-study, and launching mdn-run."""
