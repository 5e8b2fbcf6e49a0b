# The offline checkers of template.yaml: cfn-lint and the SAM translator, from PyPI when
# missing (pinned to the versions verified in the stack notes).

CFN_LINT_VERSION=1.51.0
SAM_TRANSLATOR_VERSION=1.110.0

template_tools_install_if_missing() {
  if python3 -c 'import cfnlint, samtranslator, yaml' >/dev/null 2>&1; then
    return 0
  fi
  echo "cfn-lint / aws-sam-translator not found: installing them from PyPI" >&2
  python3 -m pip install -q "cfn-lint==$CFN_LINT_VERSION" "aws-sam-translator==$SAM_TRANSLATOR_VERSION" pyyaml >&2
}
