using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Isr.Server.Admin;

/// <summary>The embedded server's self-signed certificate: ECDSA P-256, SAN localhost / 127.0.0.1 / ::1, ten years.
/// Clients pin <see cref="Fingerprint"/> (SHA-256 of the DER certificate, lowercase hex) at first login.</summary>
public static class ServerCertificate
{
    public static X509Certificate2 Create(string? hostName = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={hostName ?? "isr-server"}", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        if (hostName is { Length: > 0 } && hostName != "localhost") san.AddDnsName(hostName);
        san.AddIpAddress(IPAddress.Loopback);
        san.AddIpAddress(IPAddress.IPv6Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false)); // server auth
        var now = DateTimeOffset.UtcNow;
        return request.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(10));
    }

    /// <summary>Writes the certificate with its key as PKCS#12 (no password), readable by the owner only.</summary>
    public static void Save(X509Certificate2 certificate, string path)
    {
        var pfx = certificate.Export(X509ContentType.Pkcs12);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var file = new FileStream(path, options)) file.Write(pfx);
        CryptographicOperations.ZeroMemory(pfx);
    }

    public static X509Certificate2 Load(string path) => X509CertificateLoader.LoadPkcs12FromFile(path, null);

    public static string Fingerprint(X509Certificate2 certificate) => Convert.ToHexStringLower(SHA256.HashData(certificate.RawData));
}
