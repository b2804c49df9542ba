package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// S3Config says which bucket to use and how to reach it. What it leaves empty
// comes from the usual AWS sources (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN, AWS_REGION, AWS_PROFILE, ~/.aws/config and credentials,
// AWS_ENDPOINT_URL_S3).
type S3Config struct {
	Bucket string
	Prefix string // key prefix inside the bucket ("" or "team/ws", no slashes at the ends)
	// Endpoint of an S3-compatible server (http://127.0.0.1:7070); empty = AWS.
	Endpoint string
	Region   string
	Profile  string
	// Static credentials; both or neither.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// PathStyle addresses buckets as endpoint/bucket/key (most S3-compatible
	// servers need it); it is on whenever Endpoint is set.
	PathStyle bool
}

// S3 keeps objects in a bucket.
type S3 struct {
	client *s3.Client
	bucket string
	prefix string // "" or "p/"
	where  string // for errors
}

var _ Store = (*S3)(nil)

// NewS3 makes a client; it does not contact the server.
func NewS3(ctx context.Context, c S3Config) (*S3, error) {
	if c.Bucket == "" {
		return nil, fmt.Errorf("S3 bucket name is empty")
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		return nil, fmt.Errorf("S3 credentials: access key id and secret access key go together (one of them is empty)")
	}
	prefix := strings.Trim(c.Prefix, "/")
	if prefix != "" {
		if err := CheckKey(prefix); err != nil {
			return nil, fmt.Errorf("S3 prefix: %w", err)
		}
		prefix += "/"
	}
	opts := []func(*config.LoadOptions) error{}
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	if c.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(c.Profile))
	}
	if c.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("S3 configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // S3-compatible servers rarely care; the signer needs one
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
			o.UsePathStyle = true
		}
		if c.PathStyle {
			o.UsePathStyle = true
		}
		// Checksums only where the API requires them: not every S3-compatible
		// server knows the newer flexible checksums.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	where := fmt.Sprintf("S3 bucket %q", c.Bucket)
	if c.Endpoint != "" {
		where += " at " + c.Endpoint
	}
	return &S3{client: client, bucket: c.Bucket, prefix: prefix, where: where}, nil
}

func (s *S3) String() string { return s.where }

func (s *S3) URI(key string) string { return "s3://" + s.bucket + "/" + s.prefix + key }

func (s *S3) key(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	return s.prefix + key, nil
}

func (s *S3) wrap(op, key string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%s: %w", s.URI(key), ErrNotFound)
	}
	return fmt.Errorf("%s: %s %s: %w", s.where, op, key, err)
}

func isNotFound(err error) bool {
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == 404
}

func (s *S3) Put(ctx context.Context, key string, body io.ReadSeeker, size int64) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &k, Body: body, ContentLength: aws.Int64(size)})
	if err != nil {
		return s.wrap("put", key, err)
	}
	return nil
}

func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	k, err := s.key(key)
	if err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &k})
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	return out.Body, nil
}

func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	k, err := s.key(key)
	if err != nil {
		return Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &k})
	if err != nil {
		return Info{}, s.wrap("stat", key, err)
	}
	in := Info{Key: key, Size: aws.ToInt64(out.ContentLength)}
	if out.LastModified != nil {
		in.ModTime = *out.LastModified
	}
	return in, nil
}

func (s *S3) List(ctx context.Context, prefix string) ([]Info, error) {
	full := s.prefix + prefix
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &full})
	var out []Info
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: list %s: %w", s.where, prefix, err)
		}
		for _, o := range page.Contents {
			k := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			in := Info{Key: k, Size: aws.ToInt64(o.Size)}
			if o.LastModified != nil {
				in.ModTime = *o.LastModified
			}
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *S3) Delete(ctx context.Context, key string) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &k}); err != nil && !isNotFound(err) {
		return s.wrap("delete", key, err)
	}
	return nil
}

// CreateBucket makes the bucket if it does not exist (tests, first use).
func (s *S3) CreateBucket(ctx context.Context) error {
	if _, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket}); err == nil {
		return nil
	}
	if _, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.bucket}); err != nil {
		var owned interface{ ErrorCode() string }
		if errors.As(err, &owned) && (owned.ErrorCode() == "BucketAlreadyOwnedByYou" || owned.ErrorCode() == "BucketAlreadyExists") {
			return nil
		}
		return fmt.Errorf("%s: create bucket: %w", s.where, err)
	}
	return nil
}
