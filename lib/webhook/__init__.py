"""``multihome webhook``: lint's checks at ``kubectl apply``, as a validating admission webhook.

- :mod:`.review` decides: an AdmissionReview (``admission.k8s.io/v1``) in, its
  answer out, pure and stateless. NetworkAttachmentDefinitions get the checks of
  ``multihome lint`` (one place, :mod:`multihome.lib.lint`); Pods those of the
  ``k8s.v1.cni.cncf.io/networks`` annotation. Errors deny, warnings are returned.
- :mod:`.server` is the HTTPS edge: ``POST /validate``, ``GET /healthz`` and
  ``/readyz``, a body limit, a time limit per review, the certificate reloaded when
  its files change.
"""
