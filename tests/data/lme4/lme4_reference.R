## Reference values for tests/test_lme4_reference.py, computed with lme4 (Debian r-cran-lme4).
## Run: Rscript lme4_reference.R > lme4_reference.out  (from tests/data/lme4/)
## Checks first that the shipped CSVs equal lme4's own data sets.
suppressPackageStartupMessages(library(lme4))
cat("lme4", as.character(packageVersion("lme4")), "R", R.version.string, "\n")
chk <- function(name, csv) {
  d <- read.csv(csv, stringsAsFactors = FALSE)
  ref <- get(name, asNamespace("lme4"))
  for (col in names(ref)) {
    a <- ref[[col]]; b <- d[[col]]
    same <- if (is.numeric(a)) isTRUE(all(a == b)) else isTRUE(all(as.character(a) == as.character(b)))
    if (!same) stop(name, ": column ", col, " differs from lme4's data")
  }
  cat(name, ": CSV equals lme4's data (", nrow(d), "rows )\n")
}
for (n in c("sleepstudy", "Dyestuff", "Dyestuff2", "Penicillin", "Pastes")) chk(n, paste0(n, ".csv"))
## tight optimizer tolerances so that the printed digits are those of the maximum
ctl <- lmerControl(optimizer = "nloptwrap",
                   optCtrl = list(ftol_abs = 1e-14, ftol_rel = 1e-14, xtol_abs = 1e-12, xtol_rel = 1e-12, maxeval = 1e5))
show <- function(label, fm) {
  cat("\n==", label, if (isREML(fm)) "REML" else "ML", "\n")
  cat(sprintf("logLik %.10f  deviance/REMLcrit %.10f  df %d  nobs %d\n",
              as.numeric(logLik(fm)), if (isREML(fm)) REMLcrit(fm) else deviance(fm),
              attr(logLik(fm), "df"), nobs(fm)))
  fe <- fixef(fm); se <- sqrt(diag(as.matrix(vcov(fm))))
  for (i in seq_along(fe)) cat(sprintf("fixef %-12s %.10f  se %.10f\n", names(fe)[i], fe[i], se[i]))
  vc <- as.data.frame(VarCorr(fm))
  for (i in seq_len(nrow(vc))) cat(sprintf("vc %-12s %-12s %-12s sdcor %.10f  vcov %.10f\n", vc$grp[i],
                                          ifelse(is.na(vc$var1[i]), "-", vc$var1[i]),
                                          ifelse(is.na(vc$var2[i]), "-", vc$var2[i]), vc$sdcor[i], vc$vcov[i]))
  cat("isSingular", isSingular(fm), "\n")
}
sleepstudy <- read.csv("sleepstudy.csv"); sleepstudy$Subject <- factor(sleepstudy$Subject)
Dyestuff <- read.csv("Dyestuff.csv"); Dyestuff2 <- read.csv("Dyestuff2.csv")
Penicillin <- read.csv("Penicillin.csv"); Pastes <- read.csv("Pastes.csv")
for (reml in c(FALSE, TRUE)) {
  show("sleepstudy Reaction ~ Days + (Days | Subject)",
       lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = reml, control = ctl))
  show("sleepstudy Reaction ~ Days + (1 | Subject)",
       lmer(Reaction ~ Days + (1 | Subject), sleepstudy, REML = reml, control = ctl))
  show("sleepstudy Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)",
       lmer(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), sleepstudy, REML = reml, control = ctl))
  show("Dyestuff Yield ~ 1 + (1 | Batch)", lmer(Yield ~ 1 + (1 | Batch), Dyestuff, REML = reml, control = ctl))
  show("Dyestuff2 Yield ~ 1 + (1 | Batch)", lmer(Yield ~ 1 + (1 | Batch), Dyestuff2, REML = reml, control = ctl))
  show("Penicillin diameter ~ 1 + (1 | plate) + (1 | sample)",
       lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin, REML = reml, control = ctl))
  show("Pastes strength ~ 1 + (1 | batch/cask)",
       lmer(strength ~ 1 + (1 | batch/cask), Pastes, REML = reml, control = ctl))
  show("Pastes strength ~ 1 + (1 | batch) + (1 | sample)",
       lmer(strength ~ 1 + (1 | batch) + (1 | sample), Pastes, REML = reml, control = ctl))
}
## profile intervals (ML), as printed in lme4's documentation
cat("\n== profile confint ML\n")
print(confint(lmer(Yield ~ 1 + (1 | Batch), Dyestuff, REML = FALSE, control = ctl), oldNames = FALSE), digits = 10)
print(confint(lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin, REML = FALSE, control = ctl), oldNames = FALSE), digits = 10)
print(confint(lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE, control = ctl), oldNames = FALSE), digits = 10)
print(confint(lmer(strength ~ 1 + (1 | batch/cask), Pastes, REML = FALSE, control = ctl), oldNames = FALSE), digits = 10)
## conditional modes (ranef) and their conditional SDs (condVar) of the ML fits
cat("\n== ranef ML (mode, conditional SD)\n")
re <- function(label, fm) {
  r <- ranef(fm, condVar = TRUE)
  for (g in names(r)) {
    pv <- attr(r[[g]], "postVar")
    for (j in seq_len(ncol(r[[g]]))) for (i in seq_len(nrow(r[[g]])))
      cat(sprintf("%s %s %s %s mode %.10f condsd %.10f\n", label, g, colnames(r[[g]])[j],
                  rownames(r[[g]])[i], r[[g]][i, j], sqrt(pv[j, j, i])))
  }
}
re("Dyestuff", lmer(Yield ~ 1 + (1 | Batch), Dyestuff, REML = FALSE, control = ctl))
re("Penicillin", lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin, REML = FALSE, control = ctl))
re("Pastes", lmer(strength ~ 1 + (1 | batch/cask), Pastes, REML = FALSE, control = ctl))
re("sleepstudy", lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE, control = ctl))
